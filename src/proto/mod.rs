//! Wire codecs with no I/O in them: bytes in, values (or "need more") out, and back.
//! Each is tested and fuzzed on its own; the connection code in `conn` does the I/O.

pub mod http1;
pub mod longpoll;
pub mod query;
pub mod resp;
pub mod sse;
pub mod ws;
