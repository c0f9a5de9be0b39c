//! RFC 6455 WebSocket, with no I/O: the opening handshake, frames (parse, encode, masking),
//! incremental UTF-8 validation, and the reader that turns frames into messages and control
//! actions, enforcing every rule of the protocol with its close code.

pub mod close;
pub mod frame;
pub mod handshake;
pub mod reader;
pub mod utf8;

pub use close::CloseCode;
pub use frame::{Opcode, encode_frame};
pub use reader::{WsEvent, WsReader};
