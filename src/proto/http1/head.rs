//! Request-head parsing: httparse for the grammar, then the framing rules that keep a
//! request unambiguous (RFC 9112 §6.3) — the checks that stop request smuggling.

/// Largest request head we accept (API.md §6): past it the answer is 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields in one head; more is answered 431 like an oversized head.
pub const MAX_HEADERS: usize = 100;

use smallvec::SmallVec;

/// Request methods herald routes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Other(Box<str>),
}

impl Method {
    fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.into()),
        }
    }
}

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head: one copy of its bytes, with the target and every header field
/// as ranges into it (one allocation per request, whatever the number of fields). Header
/// names are matched without regard to case; values are kept as sent.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    raw: Box<[u8]>,
    /// The request target (origin-form: path and query).
    target: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    fields: SmallVec<[(Span, Span); 12]>,
    /// Bytes the head took in the buffer, final blank line included.
    pub len: usize,
    pub body: BodyKind,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// A range of a head's bytes; heads are at most `MAX_HEAD_BYTES`, so 16 bits do.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u16,
    end: u16,
}

impl Span {
    /// Where `part`, a slice of `buf`, lies in it.
    fn of(buf: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Span { start: start as u16, end: (start + part.len()) as u16 }
    }
}

impl RequestHead {
    fn bytes(&self, span: Span) -> &[u8] {
        &self.raw[usize::from(span.start)..usize::from(span.end)]
    }

    /// The values of every header field called `name` (lower-case), in order.
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| self.bytes(*n).eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| self.bytes(*v))
    }

    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        let (_, v) = self.fields.iter().find(|(n, _)| self.bytes(*n).eq_ignore_ascii_case(name.as_bytes()))?;
        Some(self.bytes(*v))
    }

    /// The first value of header `name` as text, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok()).map(str::trim)
    }

    /// The request target: path and query.
    pub fn target(&self) -> &str {
        // httparse admits only visible ASCII in a target.
        std::str::from_utf8(self.bytes(self.target)).unwrap_or_default()
    }

    /// The path part of the target, without the query.
    pub fn path(&self) -> &str {
        let target = self.target();
        target.split_once('?').map_or(target, |(p, _)| p)
    }

    /// The query part of the target, without the `?`.
    pub fn query(&self) -> &str {
        self.target().split_once('?').map_or("", |(_, q)| q)
    }
}

/// Why a head was refused; each maps to one status in `conn`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("request head larger than 16 KiB")]
    TooLarge,
    #[error("more than 100 header fields")]
    TooManyHeaders,
    #[error("{0}")]
    Malformed(&'static str),
    /// A header that breaks the framing rules, with its lower-case name.
    #[error("{1}")]
    BadHeader(&'static str, &'static str),
}

impl HeadError {
    /// The JSON-pointer-style location of the fault for the error body.
    pub fn path(&self) -> String {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => "/headers".into(),
            HeadError::Malformed(_) => "/".into(),
            HeadError::BadHeader(name, _) => format!("/headers/{name}"),
        }
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)` means the head is not complete yet (read more, unless `buf` is already past
/// `MAX_HEAD_BYTES`, which is reported as `TooLarge`).
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            // An early bare LF is refused as soon as it is seen, not after the head completes.
            check_line_endings(buf)?;
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HeadError::Malformed("unsupported HTTP version")),
        Err(httparse::Error::Token) | Err(httparse::Error::HeaderName) => {
            return Err(HeadError::Malformed("malformed header field"));
        }
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    check_line_endings(&buf[..len])?;
    let method = Method::parse(req.method.unwrap_or(""));
    let target = req.path.unwrap_or("");
    // Origin-form, or absolute-form, which a server must accept (RFC 9112 §3.2.2) though
    // only proxies are sent it: its path and query route the request, and its authority
    // stands for the Host field.
    let (path_and_query, authority) = match absolute_form(target) {
        Some((authority, rest)) => (rest, Some(authority)),
        None if target.starts_with('/') || (target == "*" && method == Method::Options) => (target, None),
        None => return Err(HeadError::Malformed("request target must be a path or an absolute http(s) URI")),
    };
    let minor_version = req.version.unwrap_or(1);

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    let mut hosts = 0;
    let mut fields: SmallVec<[(Span, Span); 12]> = SmallVec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = h.value;
        let mut lower = [0u8; 20];
        let name = match h.name.as_bytes() {
            n if n.len() <= lower.len() => {
                lower[..n.len()].copy_from_slice(n);
                lower[..n.len()].make_ascii_lowercase();
                &lower[..n.len()]
            }
            // No field herald looks at has a longer name.
            _ => &b""[..],
        };
        match name {
            b"content-length" => {
                if content_length.is_some() {
                    return Err(HeadError::BadHeader("content-length", "duplicate Content-Length"));
                }
                content_length = Some(parse_content_length(value)?);
            }
            b"transfer-encoding" => {
                if te_seen {
                    return Err(HeadError::BadHeader("transfer-encoding", "duplicate Transfer-Encoding"));
                }
                te_seen = true;
                let v = std::str::from_utf8(value).unwrap_or("").trim();
                if !v.eq_ignore_ascii_case("chunked") {
                    return Err(HeadError::BadHeader(
                        "transfer-encoding",
                        "only Transfer-Encoding: chunked is supported",
                    ));
                }
                chunked = true;
            }
            b"connection" => {
                for token in std::str::from_utf8(value).unwrap_or("").split(',') {
                    let t = token.trim();
                    close |= t.eq_ignore_ascii_case("close");
                    keep_alive_token |= t.eq_ignore_ascii_case("keep-alive");
                }
            }
            b"expect" => {
                let v = std::str::from_utf8(value).unwrap_or("").trim();
                expect_continue = v.eq_ignore_ascii_case("100-continue");
            }
            b"host" => hosts += 1,
            _ => {}
        }
        fields.push((Span::of(buf, h.name.as_bytes()), Span::of(buf, value)));
    }
    if te_seen && content_length.is_some() {
        return Err(HeadError::BadHeader("transfer-encoding", "both Content-Length and Transfer-Encoding"));
    }
    if te_seen && minor_version == 0 {
        return Err(HeadError::BadHeader("transfer-encoding", "Transfer-Encoding in an HTTP/1.0 request"));
    }
    if minor_version == 1 && hosts != 1 {
        return Err(HeadError::BadHeader("host", "an HTTP/1.1 request needs exactly one Host header"));
    }
    let body = if chunked {
        BodyKind::Chunked
    } else {
        match content_length {
            Some(0) | None => BodyKind::None,
            Some(n) => BodyKind::Length(n),
        }
    };
    let keep_alive = if minor_version == 0 { keep_alive_token && !close } else { !close };
    let mut raw = buf[..len].to_vec();
    let target = if path_and_query.starts_with('/') || authority.is_none() {
        Span::of(buf, path_and_query.as_bytes())
    } else {
        // An absolute URI with an empty path (`http://h` or `http://h?q`) names "/": the
        // target is written after the head's bytes, in the one copy kept of them.
        let start = raw.len();
        raw.push(b'/');
        raw.extend_from_slice(path_and_query.as_bytes());
        Span { start: start as u16, end: raw.len() as u16 }
    };
    if let Some(authority) = authority {
        let authority = Span::of(buf, authority.as_bytes());
        for (name, value) in fields.iter_mut() {
            if buf[usize::from(name.start)..usize::from(name.end)].eq_ignore_ascii_case(b"host") {
                *value = authority;
            }
        }
    }
    Ok(Some(RequestHead {
        method,
        raw: raw.into_boxed_slice(),
        target,
        minor_version,
        fields,
        len,
        body,
        keep_alive,
        expect_continue: expect_continue && minor_version == 1,
    }))
}

/// A target in absolute-form, `http(s)://authority[/path][?query]`: its authority and what
/// follows it. `None` for any other form, and for an authority that is empty or has userinfo
/// (`user@`, which RFC 9110 §4.2.4 forbids in http(s) URIs).
fn absolute_form(target: &str) -> Option<(&str, &str)> {
    let scheme_end = target.find("://")?;
    let scheme = &target[..scheme_end];
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let (authority, path_and_query) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some((authority, path_and_query))
}

/// Content-Length is 1*DIGIT: no sign, no spaces inside, no list, and it fits in u64.
fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    let v = trim_ows(value);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadHeader("content-length", "Content-Length is not a number"));
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |e| e + 1);
    &v[start..end]
}

/// Every line of the head must end in CRLF, and no line may start with white space
/// (obs-fold): a bare LF or a folded header can be read differently by a proxy in front.
fn check_line_endings(head: &[u8]) -> Result<(), HeadError> {
    let mut prev = 0u8;
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' {
            if prev != b'\r' {
                return Err(HeadError::Malformed("bare LF in request head"));
            }
            if matches!(head.get(i + 1), Some(b' ' | b'\t')) {
                return Err(HeadError::Malformed("obsolete line folding in request head"));
            }
        } else if prev == b'\r' {
            return Err(HeadError::Malformed("bare CR in request head"));
        }
        prev = b;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_head(s.as_bytes())
    }

    #[test]
    fn a_simple_get() {
        let h = parse("GET /sub/a?x=1 HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path(), "/sub/a");
        assert_eq!(h.query(), "x=1");
        assert_eq!(h.header_str("accept"), Some("text/event-stream"));
        assert_eq!(h.body, BodyKind::None);
        assert!(h.keep_alive);
    }

    #[test]
    fn an_absolute_form_target_routes_by_its_path_and_its_authority_is_the_host() {
        let h = parse("GET http://herald.example:8080/sub/a?x=1 HTTP/1.1\r\nHost: other\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.path(), h.query()), ("/sub/a", "x=1"));
        assert_eq!(h.header_str("host"), Some("herald.example:8080"));
        for (target, path, query) in
            [("HTTPS://h", "/", ""), ("http://h?a=b", "/", "a=b"), ("http://[::1]:9/x/y", "/x/y", "")]
        {
            let h = parse(&format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n")).unwrap().unwrap();
            assert_eq!((h.path(), h.query()), (path, query), "{target}");
        }
        for bad in ["ftp://h/x", "http:///x", "http://u@h/x", "h/x", "http:/h/x"] {
            let r = parse(&format!("GET {bad} HTTP/1.1\r\nHost: h\r\n\r\n"));
            assert!(matches!(r, Err(HeadError::Malformed(_))), "{bad}: {r:?}");
        }
    }

    #[test]
    fn byte_by_byte_is_partial_until_the_blank_line() {
        let raw = b"POST /pub/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
        let head_len = raw.len() - 3;
        for i in 0..head_len {
            assert_eq!(parse_head(&raw[..i]).unwrap().map(|h| h.len), None, "at {i}");
        }
        let h = parse_head(&raw[..head_len]).unwrap().unwrap();
        assert_eq!(h.len, head_len);
        assert_eq!(h.body, BodyKind::Length(3));
    }

    #[test]
    fn http10_keep_alive_only_on_request() {
        let h = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap();
        assert!(h.keep_alive);
        let h = parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for raw in [
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3x\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\nHost: h\n\n",
            "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        ] {
            assert!(parse(raw).is_err(), "accepted {raw:?}");
        }
    }

    #[test]
    fn an_early_bare_lf_is_refused_before_the_head_completes() {
        assert!(parse("GET / HTTP/1.1\nHost").is_err());
    }

    #[test]
    fn oversized_heads_and_many_headers() {
        let big = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse(&big).unwrap_err(), HeadError::TooLarge);
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD_BYTES + 10));
        assert_eq!(parse(&partial).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n");
        assert_eq!(parse(&raw).unwrap_err(), HeadError::TooManyHeaders);
    }

    #[test]
    fn header_names_match_in_any_case() {
        let h = parse(
            "GET /a HTTP/1.1\r\nHOST: h\r\nCookie: a=1\r\nx-Long-Header-Name-Over-Twenty: v\r\ncookie: b=2\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.header_str("host"), Some("h"));
        assert_eq!(h.headers("cookie").collect::<Vec<_>>(), [&b"a=1"[..], b"b=2"]);
        assert_eq!(h.header_str("x-long-header-name-over-twenty"), Some("v"));
        assert_eq!(h.target(), "/a");
    }

    #[test]
    fn expect_continue_and_chunked() {
        let h = parse("POST /pub/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.expect_continue);
        assert_eq!(h.body, BodyKind::Chunked);
    }
}
