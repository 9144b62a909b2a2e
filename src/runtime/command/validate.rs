//! Pure validation of a `run_command` request into an [`HttpCommand`]: method allow-list, relative
//! `api` path, port, forwarded headers and body encoding. No I/O here, so it is unit-tested directly
//! and is a fuzz target; the HTTP exchange lives in `super::http`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use serde_json::{Map, Value};

use super::CommandError;

/// Port of the runtime's HTTPS REST API. Any other `port` is spoken to in plain HTTP.
pub const HTTPS_PORT: u16 = 8443;
/// Methods the proxy forwards. Upstream 3d2c700 allowed GET, POST, PUT and DELETE; PATCH is added
/// because it is an ordinary REST verb with a body. HEAD, OPTIONS, TRACE and CONNECT are refused:
/// the runtime API does not use them and CONNECT/TRACE have proxy semantics we never want.
pub const ALLOWED_METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];
/// Longest accepted `api` (path plus query), in bytes.
pub const MAX_API_LEN: usize = 2048;
/// Most headers a caller may forward.
pub const MAX_HEADERS: usize = 64;
/// Longest forwarded header value, in bytes.
pub const MAX_HEADER_VALUE: usize = 8192;

/// Headers never forwarded: hop-by-hop headers (RFC 9110 §7.6.1), `Host` (we address the runtime
/// ourselves) and `Content-Length` (computed from the body we send).
const DROPPED_HEADERS: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// A validated request to a runtime's REST API: everything needed to build the HTTP request except
/// the runtime's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCommand {
    /// One of [`ALLOWED_METHODS`].
    pub method: Method,
    /// Relative path plus optional query, without the leading `/` (e.g. `api/status?x=1`).
    pub path_and_query: String,
    /// [`HTTPS_PORT`] (TLS) unless the request named another port (plain HTTP).
    pub port: u16,
    /// Headers to forward (hop-by-hop, `Host` and `Content-Length` already dropped), in request order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request body; `None` sends no body.
    pub body: Option<Bytes>,
}

impl HttpCommand {
    /// `true` when the request goes to the runtime's HTTPS port (TLS), `false` for plain HTTP.
    pub fn is_tls(&self) -> bool {
        self.port == HTTPS_PORT
    }

    /// Validates the command object shared by both `run_command` forms: `method` and `api`
    /// (required strings), `port` (optional integer 1–65535, default 8443), `headers` (optional
    /// object of string values; `null` counts as absent) and `data` (optional JSON body).
    ///
    /// Field-level failures name the field, in the contracts' wording (`Missing required field:
    /// 'Missing key: api'`, `Invalid field type: Value must be ... (field: port)`); value failures
    /// say what is wrong with the value.
    pub fn from_json(command: &Map<String, Value>) -> Result<Self, CommandError> {
        let method = match command.get("method") {
            None | Some(Value::Null) => return Err(CommandError::MissingField("method")),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(invalid_type("method", "a string")),
        };
        let api = match command.get("api") {
            None | Some(Value::Null) => return Err(CommandError::MissingField("api")),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(invalid_type("api", "a string")),
        };
        let port = match command.get("port") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_port(v)?),
        };
        let headers = match command.get("headers") {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => return Err(invalid_type("headers", "an object")),
        };
        Self::new(method, api, port, headers, command.get("data"))
    }

    /// Validates the individual parts (see [`HttpCommand::from_json`]).
    pub fn new(
        method: &str,
        api: &str,
        port: Option<u16>,
        headers: Option<&Map<String, Value>>,
        data: Option<&Value>,
    ) -> Result<Self, CommandError> {
        let method = validate_method(method)?;
        let path_and_query = validate_api(api)?;
        let port = match port {
            None => HTTPS_PORT,
            Some(0) => return Err(invalid_value("port", "must be between 1 and 65535")),
            Some(p) => p,
        };
        let mut forwarded = Vec::new();
        if let Some(headers) = headers {
            if headers.len() > MAX_HEADERS {
                return Err(invalid_value(
                    "headers",
                    format!("at most {MAX_HEADERS} headers are forwarded"),
                ));
            }
            for (name, value) in headers {
                if let Some(pair) = validate_header(name, value)? {
                    forwarded.push(pair);
                }
            }
        }
        let body = encode_body(&method, &mut forwarded, data)?;
        Ok(Self {
            method,
            path_and_query,
            port,
            headers: forwarded,
            body,
        })
    }
}

impl HttpCommand {
    /// The HTTP request to send to the runtime at `addr`: origin-form target (hyper's
    /// connection-level client writes the URI as the request target), `Host` set to `addr`, the
    /// forwarded headers, the body. Pure, so the fuzzers can check that no `api` or header moves
    /// the request off the runtime's origin.
    pub fn request(&self, addr: SocketAddr) -> Result<http::Request<Bytes>, CommandError> {
        let mut request = http::Request::builder()
            .method(self.method.clone())
            .uri(format!("/{}", self.path_and_query))
            .header(http::header::HOST, addr.to_string());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request
            .body(self.body.clone().unwrap_or_default())
            .map_err(|e| CommandError::Http(format!("cannot build the request: {e}")))
    }
}

fn invalid_type(field: &'static str, expected: &'static str) -> CommandError {
    CommandError::InvalidType { field, expected }
}

fn invalid_value(field: &'static str, reason: impl Into<String>) -> CommandError {
    CommandError::InvalidValue {
        field,
        reason: reason.into(),
    }
}

fn parse_port(v: &Value) -> Result<u16, CommandError> {
    // Booleans are not numbers; a float or a number out of range is not a port.
    match v.as_u64() {
        Some(p)
            if p >= 1
                && let Ok(p) = u16::try_from(p) =>
        {
            Ok(p)
        }
        Some(_) => Err(invalid_value("port", "must be between 1 and 65535")),
        None => Err(invalid_type("port", "an integer between 1 and 65535")),
    }
}

/// Upper-cases the method and checks it against [`ALLOWED_METHODS`].
pub fn validate_method(method: &str) -> Result<Method, CommandError> {
    let upper = method.trim().to_ascii_uppercase();
    if !ALLOWED_METHODS.contains(&upper.as_str()) {
        return Err(CommandError::MethodNotAllowed(
            method.chars().take(32).collect(),
        ));
    }
    Method::from_bytes(upper.as_bytes())
        .map_err(|_| CommandError::MethodNotAllowed(method.chars().take(32).collect()))
}

/// Checks that `api` is a relative path (plus optional query) inside the runtime's API and returns
/// it without leading slashes.
///
/// Refused: a scheme (`http:`, `//host`), `@` (userinfo), a backslash, control characters, spaces,
/// non-ASCII bytes (they must be percent-encoded), a fragment (`#`), `.` and `..` path segments,
/// also when percent-encoded (decoded repeatedly, so `%252e%252e` counts), and encoded `/` or `\`
/// inside a segment (a server decoding them would see a different path than we checked).
pub fn validate_api(api: &str) -> Result<String, CommandError> {
    let refuse = |reason: &str| invalid_value("api", reason.to_string());
    if api.len() > MAX_API_LEN {
        return Err(refuse("longer than 2048 bytes"));
    }
    if let Some(c) = api
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || !c.is_ascii())
    {
        return Err(invalid_value(
            "api",
            format!(
                "contains the character {:?} (control, space or non-ASCII characters must be percent-encoded)",
                c
            ),
        ));
    }
    if api.contains('@') {
        return Err(refuse("must not contain '@'"));
    }
    if api.contains('\\') {
        return Err(refuse("must not contain a backslash"));
    }
    if api.contains('#') {
        return Err(refuse("must not contain a fragment ('#')"));
    }
    let rel = api.trim_start_matches('/');
    let (path, query) = match rel.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rel, None),
    };
    // A scheme is letters/digits/+/-/. followed by ':' before any '/'. Refuse any ':' in the first
    // segment so `http://x`, `http:x` and `javascript:` all fail; later segments may contain ':'.
    if path
        .split('/')
        .next()
        .is_some_and(|first| first.contains(':'))
    {
        return Err(refuse(
            "must be a relative path, not a URL (no scheme or host)",
        ));
    }
    for (i, segment) in path.split('/').enumerate() {
        let decoded = percent_decode_fully(segment)?;
        if i == 0 && decoded.contains(':') {
            return Err(refuse(
                "must be a relative path, not a URL (no scheme or host)",
            ));
        }
        if decoded == ".." || decoded == "." {
            return Err(refuse("must not contain '.' or '..' path segments"));
        }
        if decoded.contains('/') || decoded.contains('\\') {
            return Err(refuse(
                "must not contain an encoded '/' or '\\' inside a path segment",
            ));
        }
        if decoded.contains('@') {
            return Err(refuse("must not contain '@'"));
        }
    }
    if let Some(query) = query {
        // The query is passed on verbatim; only its escapes must be well-formed.
        percent_decode_fully(query)?;
    }
    // Final check that the result is a valid URI path-and-query.
    http::uri::PathAndQuery::try_from(format!("/{rel}"))
        .map_err(|e| invalid_value("api", format!("is not a valid URI path: {e}")))?;
    Ok(rel.to_string())
}

/// Decodes `%XX` escapes until nothing changes (at most 4 rounds, enough for any double or triple
/// encoding trick; a fifth level is refused).
fn percent_decode_fully(s: &str) -> Result<String, CommandError> {
    let mut current = s.to_string();
    for _ in 0..4 {
        if !current.contains('%') {
            return Ok(current);
        }
        let next = percent_decode_once(&current)?;
        if next == current {
            return Ok(current);
        }
        current = next;
    }
    if current.contains('%') {
        return Err(invalid_value("api", "is percent-encoded too many times"));
    }
    Ok(current)
}

fn percent_decode_once(s: &str) -> Result<String, CommandError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => return Err(invalid_value("api", "contains a malformed '%' escape")),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&out).into_owned();
    if decoded.chars().any(|c| c.is_control()) {
        return Err(invalid_value("api", "encodes a control character"));
    }
    Ok(decoded)
}

/// Validates one caller header; `Ok(None)` for headers that are dropped on purpose.
fn validate_header(
    name: &str,
    value: &Value,
) -> Result<Option<(HeaderName, HeaderValue)>, CommandError> {
    let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        invalid_value(
            "headers",
            format!("{:?} is not a valid header name", truncate(name)),
        )
    })?;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(invalid_value(
                "headers",
                format!("the value of {header_name} must be a string"),
            ));
        }
    };
    if text.len() > MAX_HEADER_VALUE {
        return Err(invalid_value(
            "headers",
            format!("the value of {header_name} is longer than {MAX_HEADER_VALUE} bytes"),
        ));
    }
    // HeaderValue::from_str refuses control characters (CR/LF injection) and non-visible ASCII.
    let header_value = HeaderValue::from_str(&text).map_err(|_| {
        invalid_value(
            "headers",
            format!("the value of {header_name} contains characters not allowed in a header"),
        )
    })?;
    if DROPPED_HEADERS.contains(&header_name.as_str()) {
        return Ok(None);
    }
    Ok(Some((header_name, header_value)))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Encodes `data` as the request body and sets `Content-Type` when we choose it.
///
/// - No `Content-Type` given, or `application/json`: `data` is sent as JSON and `Content-Type:
///   application/json` added. When `data` is absent or `null`, GET and DELETE send no body while
///   POST, PUT and PATCH send `{}` (upstream 3d2c700 always sent `{}`; a body on GET is unusual
///   enough that we stop doing it).
/// - Another `Content-Type`: a string `data` is sent raw; an object of scalars with
///   `application/x-www-form-urlencoded` is form-encoded (as upstream did); anything else is refused.
fn encode_body(
    method: &Method,
    headers: &mut Vec<(HeaderName, HeaderValue)>,
    data: Option<&Value>,
) -> Result<Option<Bytes>, CommandError> {
    let content_type = headers
        .iter()
        .find(|(n, _)| n == http::header::CONTENT_TYPE)
        .map(|(_, v)| v.to_str().unwrap_or("").to_ascii_lowercase());
    let data = data.filter(|d| !d.is_null());
    let is_json = content_type
        .as_deref()
        .is_none_or(|ct| ct.split(';').next().unwrap_or("").trim() == "application/json");
    if is_json {
        let body = match data {
            Some(d) => serde_json::to_vec(d).map_err(|e| invalid_value("data", e.to_string()))?,
            None if *method == Method::GET || *method == Method::DELETE => return Ok(None),
            None => b"{}".to_vec(),
        };
        if content_type.is_none() {
            headers.push((
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ));
        }
        return Ok(Some(Bytes::from(body)));
    }
    let ct = content_type.unwrap_or_default();
    match data {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(Bytes::from(s.clone()))),
        Some(Value::Object(map)) if ct.starts_with("application/x-www-form-urlencoded") => {
            let mut out = String::new();
            for (k, v) in map {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(invalid_value(
                            "data",
                            format!("form field {:?} must be a string or a number", truncate(k)),
                        ));
                    }
                };
                if !out.is_empty() {
                    out.push('&');
                }
                out.push_str(&form_encode(k));
                out.push('=');
                out.push_str(&form_encode(&v));
            }
            Ok(Some(Bytes::from(out)))
        }
        Some(_) => Err(invalid_value(
            "data",
            format!("must be a string when Content-Type is {ct:?}"),
        )),
    }
}

/// `application/x-www-form-urlencoded` encoding of one key or value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cmd(v: Value) -> Result<HttpCommand, CommandError> {
        HttpCommand::from_json(v.as_object().expect("test input is an object"))
    }

    #[test]
    fn the_request_targets_the_given_address_only() {
        // The fuzzers check this for any input (fuzz/fuzz_targets/run_command_url.rs).
        let c = cmd(
            json!({"method": "get", "api": "//api/x?y=1", "headers": {"Host": "evil.example"}}),
        )
        .unwrap();
        let r = c.request("172.30.0.2:8443".parse().unwrap()).unwrap();
        assert_eq!(r.uri(), "/api/x?y=1");
        assert!(r.uri().authority().is_none());
        let hosts: Vec<_> = r.headers().get_all(http::header::HOST).iter().collect();
        assert_eq!(hosts, ["172.30.0.2:8443"]);
    }

    #[test]
    fn accepts_a_plain_relative_path_and_strips_leading_slashes() {
        assert_eq!(validate_api("api/status").unwrap(), "api/status");
        assert_eq!(validate_api("/api/status").unwrap(), "api/status");
        assert_eq!(validate_api("//api/status").unwrap(), "api/status");
        assert_eq!(validate_api("").unwrap(), "");
        assert_eq!(
            validate_api("api/programs?list_all=true&x=a%20b").unwrap(),
            "api/programs?list_all=true&x=a%20b"
        );
        assert_eq!(validate_api("a/b:c/d").unwrap(), "a/b:c/d");
        assert_eq!(
            validate_api("file..name/x.json").unwrap(),
            "file..name/x.json"
        );
    }

    #[test]
    fn refuses_traversal_also_when_percent_encoded() {
        for api in [
            "../x",
            "a/../../x",
            "a/..",
            "./x",
            "%2e%2e/x",
            "%2E%2e/x",
            "a/%2e%2E",
            "%252e%252e/x",
            "a%2f..%2fb",
            "a%2F%2E%2E",
            "a%5cb",
        ] {
            assert!(
                matches!(
                    validate_api(api),
                    Err(CommandError::InvalidValue { field: "api", .. })
                ),
                "{api} accepted"
            );
        }
    }

    #[test]
    fn refuses_urls_userinfo_backslashes_and_control_characters() {
        for api in [
            "http://evil",
            "https://evil/x",
            "http:evil",
            "javascript:alert(1)",
            "user@host/x",
            "x%40y",
            "a\\b",
            "a\r\nHost: evil",
            "a\tb",
            "a b",
            "a#frag",
            "caf\u{e9}",
            "a%0d%0ab",
            "a%zz",
            "a%2",
            "http%3a//evil",
            "http%253A//evil",
        ] {
            assert!(validate_api(api).is_err(), "{api:?} accepted");
        }
        assert!(validate_api(&"a".repeat(MAX_API_LEN + 1)).is_err());
    }

    /// Independent oracle: what a server that percent-decodes (even twice) would resolve.
    fn escapes_root(path: &str) -> bool {
        let mut p = path.to_string();
        for _ in 0..3 {
            let mut out = Vec::new();
            let b = p.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%'
                    && let Some(v) = b
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b[i]);
                i += 1;
            }
            p = String::from_utf8_lossy(&out).into_owned();
        }
        let p = p.replace('\\', "/");
        p.split('/').next().is_some_and(|first| first.contains(':'))
            || p.split('/')
                .any(|seg| seg == ".." || seg == "." || seg.contains('@'))
    }

    #[test]
    fn randomized_paths_never_escape_the_api_root_once_accepted() {
        use rand::RngExt;
        const ALPHABET: &[u8] = b"./%25eEfFc@:?ab3A\\";
        let mut rng = rand::rng();
        for _ in 0..20_000 {
            let len = rng.random_range(0..16);
            let api: String = (0..len)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect();
            if let Ok(accepted) = validate_api(&api) {
                let path = accepted.split('?').next().unwrap_or_default();
                assert!(!escapes_root(path), "{api:?} accepted as {accepted:?}");
            }
        }
    }

    #[test]
    fn method_allow_list_is_case_insensitive_and_refuses_the_rest() {
        assert_eq!(validate_method("get").unwrap(), Method::GET);
        assert_eq!(validate_method("PATCH").unwrap(), Method::PATCH);
        for m in ["TRACE", "CONNECT", "OPTIONS", "HEAD", "", "G ET", "FOO"] {
            assert!(
                matches!(validate_method(m), Err(CommandError::MethodNotAllowed(_))),
                "{m} accepted"
            );
        }
    }

    #[test]
    fn default_port_is_https_and_another_port_is_plain_http() {
        let c = cmd(json!({"method": "GET", "api": "status"})).unwrap();
        assert_eq!(c.port, HTTPS_PORT);
        assert!(c.is_tls());
        let c = cmd(json!({"method": "GET", "api": "status", "port": 8080})).unwrap();
        assert_eq!(c.port, 8080);
        assert!(!c.is_tls());
        assert!(cmd(json!({"method": "GET", "api": "s", "port": 0})).is_err());
        assert!(cmd(json!({"method": "GET", "api": "s", "port": 70000})).is_err());
        assert!(matches!(
            cmd(json!({"method": "GET", "api": "s", "port": true})),
            Err(CommandError::InvalidType { field: "port", .. })
        ));
        assert!(cmd(json!({"method": "GET", "api": "s", "port": "8080"})).is_err());
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        assert!(matches!(
            cmd(json!({"api": "x"})),
            Err(CommandError::MissingField("method"))
        ));
        assert!(matches!(
            cmd(json!({"method": "GET"})),
            Err(CommandError::MissingField("api"))
        ));
        assert!(matches!(
            cmd(json!({"method": 1, "api": "x"})),
            Err(CommandError::InvalidType {
                field: "method",
                ..
            })
        ));
        assert!(matches!(
            cmd(json!({"method": "GET", "api": "x", "headers": []})),
            Err(CommandError::InvalidType {
                field: "headers",
                ..
            })
        ));
        // null headers count as absent (upstream crashed on them).
        assert!(cmd(json!({"method": "GET", "api": "x", "headers": null})).is_ok());
    }

    #[test]
    fn hop_by_hop_host_and_length_headers_are_dropped_and_injection_refused() {
        let c = cmd(json!({"method": "GET", "api": "x", "headers": {
            "Host": "evil", "Connection": "close", "Content-Length": "5",
            "Transfer-Encoding": "chunked", "X-Token": "abc", "Accept": "application/json"
        }}))
        .unwrap();
        let names: Vec<&str> = c.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-token", "accept"]);
        assert!(
            cmd(json!({"method": "GET", "api": "x", "headers": {"X-A": "a\r\nHost: evil"}}))
                .is_err()
        );
        assert!(cmd(json!({"method": "GET", "api": "x", "headers": {"Bad Name": "a"}})).is_err());
        assert!(cmd(json!({"method": "GET", "api": "x", "headers": {"X-A": {"o": 1}}})).is_err());
    }

    #[test]
    fn json_body_by_default_and_raw_string_with_another_content_type() {
        let c = cmd(json!({"method": "POST", "api": "x", "data": {"a": 1}})).unwrap();
        assert_eq!(c.body.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert!(
            c.headers
                .iter()
                .any(|(n, v)| n == http::header::CONTENT_TYPE && v == "application/json")
        );

        let c = cmd(json!({"method": "GET", "api": "x"})).unwrap();
        assert_eq!(c.body, None);
        let c = cmd(json!({"method": "POST", "api": "x"})).unwrap();
        assert_eq!(c.body.as_deref(), Some(&b"{}"[..]));

        let c = cmd(json!({"method": "POST", "api": "x",
            "headers": {"Content-Type": "text/plain"}, "data": "raw text"}))
        .unwrap();
        assert_eq!(c.body.as_deref(), Some(&b"raw text"[..]));
        let cts: Vec<_> = c
            .headers
            .iter()
            .filter(|(n, _)| n == http::header::CONTENT_TYPE)
            .collect();
        assert_eq!(cts.len(), 1);

        let c = cmd(json!({"method": "POST", "api": "x",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            "data": {"a b": "c&d", "n": 1}}))
        .unwrap();
        assert_eq!(c.body.as_deref(), Some(&b"a+b=c%26d&n=1"[..]));

        assert!(
            cmd(json!({"method": "POST", "api": "x",
            "headers": {"Content-Type": "text/plain"}, "data": {"a": 1}}))
            .is_err()
        );
    }
}
