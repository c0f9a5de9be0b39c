//! Who may do what (API.md §6): publish rights, subscriber identity from an HS256 JWT, which
//! topics an identity may read, and CORS. Pure functions over request heads; the handlers
//! call them before touching the engine.

pub mod cors;
pub mod jwt;
pub mod rights;
