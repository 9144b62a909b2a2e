//! Pure validation of a `run_command` request into an [`HttpCommand`]: method allow-list, relative
//! `api` path, `params` (the query string), port, forwarded headers, and the body (`data`, or a
//! multipart upload of `files` with `data` as text fields). No I/O here, so it is unit-tested
//! directly and is a fuzz target; the HTTP exchange lives in `super::http`.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use serde_json::{Map, Value};

use super::CommandError;
use super::multipart::{self, FileMeta, Multipart, Part};
use crate::attachments::{self, Attachment};

/// Port of the runtime's HTTPS REST API. Any other `port` is spoken to in plain HTTP.
pub const HTTPS_PORT: u16 = 8443;
/// Methods the proxy forwards. Upstream 3d2c700 allowed GET, POST, PUT and DELETE; PATCH is added
/// because it is an ordinary REST verb with a body. HEAD, OPTIONS, TRACE and CONNECT are refused:
/// the runtime API does not use them and CONNECT/TRACE have proxy semantics we never want.
pub const ALLOWED_METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];
/// Longest accepted `api` (path plus query), in bytes.
pub const MAX_API_LEN: usize = 2048;
/// Longest request target (path plus query, `params` included), in bytes.
pub const MAX_TARGET_LEN: usize = 8192;
/// Most bytes the `files` of one request may decode to (32 MiB: a PLC program with room to spare).
pub const MAX_UPLOAD_BYTES: usize = 32 << 20;
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
    /// Request body in one buffer; `None` sends no body (or the [`Self::multipart`] one).
    pub body: Option<Bytes>,
    /// A `multipart/form-data` upload (`files`, with `data` as text fields); when set, `body` is
    /// `None` and the `Content-Type` header declares this body's boundary.
    pub multipart: Option<Multipart>,
}

/// The fields of a `run_command` request that make the HTTP request, their JSON types already
/// checked by the topic's contract.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    /// `method`.
    pub method: &'a str,
    /// `api`.
    pub api: &'a str,
    /// `port` (`None`: [`HTTPS_PORT`]).
    pub port: Option<u16>,
    /// `headers`.
    pub headers: Option<&'a Map<String, Value>>,
    /// `params`: the query string (object, list of `[key, value]` pairs, or a raw string).
    pub params: Option<&'a Value>,
    /// `data`: the body, or the text fields of an upload.
    pub data: Option<&'a Value>,
    /// `files`: field name → `{filename?, content_base64, content_type?}`.
    pub files: Option<&'a Value>,
}

impl HttpCommand {
    /// `true` when the request goes to the runtime's HTTPS port (TLS), `false` for plain HTTP.
    pub fn is_tls(&self) -> bool {
        self.port == HTTPS_PORT
    }

    /// Validates a command whose field types the topic's contract has checked: the method
    /// against [`ALLOWED_METHODS`], `api` as a relative path, the port (`None`: [`HTTPS_PORT`]),
    /// the headers to forward and the body encoding. Failures say what is wrong with the value.
    pub fn new(
        method: &str,
        api: &str,
        port: Option<u16>,
        headers: Option<&Map<String, Value>>,
        data: Option<&Value>,
    ) -> Result<Self, CommandError> {
        Self::from_fields(&Fields {
            method,
            api,
            port,
            headers,
            data,
            ..Fields::default()
        })
    }

    /// Validates a whole request ([`Fields`]): what [`HttpCommand::new`] checks, plus `params`
    /// appended to the query as Python `requests` encodes them, and `files` decoded into a
    /// multipart body (upstream HEAD §2.3–2.5) of at most [`MAX_UPLOAD_BYTES`].
    pub fn from_fields(fields: &Fields<'_>) -> Result<Self, CommandError> {
        let Fields {
            method,
            api,
            port,
            headers,
            params,
            data,
            files,
        } = *fields;
        let method = validate_method(method)?;
        let mut path_and_query = validate_api(api)?;
        if let Some(query) = encode_params(params)? {
            match path_and_query.split_once('?') {
                Some((_, existing)) if !existing.is_empty() => path_and_query.push('&'),
                Some(_) => {}
                None => path_and_query.push('?'),
            }
            path_and_query.push_str(&query);
            if path_and_query.len() > MAX_TARGET_LEN {
                return Err(invalid_value(
                    "params",
                    format!("make the request target longer than {MAX_TARGET_LEN} bytes"),
                ));
            }
            // A raw string may hold characters a URI cannot (found by the fuzzer: `<`).
            http::uri::PathAndQuery::try_from(format!("/{path_and_query}")).map_err(|e| {
                invalid_value("params", format!("do not make a valid query string: {e}"))
            })?;
        }
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
        let data = data.filter(|d| !d.is_null());
        if let Some(multipart) = encode_upload(&forwarded, data, files)? {
            return Ok(Self {
                method,
                path_and_query,
                port,
                headers: forwarded,
                body: None,
                multipart: Some(multipart),
            });
        }
        let body = encode_body(&method, &mut forwarded, data)?;
        Ok(Self {
            method,
            path_and_query,
            port,
            headers: forwarded,
            body,
            multipart: None,
        })
    }

    /// Bytes of body sent (multipart framing included).
    pub fn body_len(&self) -> u64 {
        match (&self.multipart, &self.body) {
            (Some(m), _) => m.len(),
            (None, Some(b)) => b.len() as u64,
            (None, None) => 0,
        }
    }

    /// The body as chunks to send in order (the multipart one without copying its files).
    pub fn body_chunks(&self) -> Vec<Bytes> {
        match (&self.multipart, &self.body) {
            (Some(m), _) => m.chunks(),
            (None, Some(b)) => vec![b.clone()],
            (None, None) => Vec::new(),
        }
    }
}

impl HttpCommand {
    /// The HTTP request to send to the runtime at `addr`: origin-form target (hyper's
    /// connection-level client writes the URI as the request target), `Host` set to `addr`, the
    /// forwarded headers, the body. For an upload the body here is empty and the headers carry
    /// the multipart `Content-Type` and the exact `Content-Length`; the bytes are
    /// [`Self::body_chunks`]. Pure, so the fuzzers can check that no `api` or header moves the
    /// request off the runtime's origin.
    pub fn request(&self, addr: SocketAddr) -> Result<http::Request<Bytes>, CommandError> {
        let mut request = http::Request::builder()
            .method(self.method.clone())
            .uri(format!("/{}", self.path_and_query))
            .header(http::header::HOST, addr.to_string());
        for (name, value) in &self.headers {
            if self.multipart.is_some() && name == http::header::CONTENT_TYPE {
                continue;
            }
            request = request.header(name, value);
        }
        if let Some(multipart) = &self.multipart {
            // An explicit length: the runtime's server (werkzeug) is not asked to handle chunked
            // request bodies.
            request = request
                .header(http::header::CONTENT_TYPE, multipart.content_type())
                .header(http::header::CONTENT_LENGTH, multipart.len());
        }
        request
            .body(self.body.clone().unwrap_or_default())
            .map_err(|e| CommandError::Http(format!("cannot build the request: {e}")))
    }
}

fn invalid_value(field: &'static str, reason: impl Into<String>) -> CommandError {
    CommandError::InvalidValue {
        field,
        reason: reason.into(),
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
                let Some(v) = scalar_text(v) else {
                    return Err(invalid_value(
                        "data",
                        format!("form field {:?} must be a string or a number", truncate(k)),
                    ));
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

/// `application/x-www-form-urlencoded` encoding of one key or value, as Python's `quote_plus`
/// (what `requests` uses for `params` and form bodies): `A–Z a–z 0–9 _ . - ~` kept, space → `+`,
/// every other byte of the UTF-8 text `%XX`.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A scalar as Python's `str()` renders it in `requests`' encodings: strings as is, numbers in
/// decimal, `True`/`False`. `None` for anything else (null, arrays, objects).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("True".to_owned()),
        Value::Bool(false) => Some("False".to_owned()),
        _ => None,
    }
}

/// `true` for the values Python treats as false (`requests` ignores falsy `params` and `data`).
fn is_falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The query string `params` add, as `requests` builds it: an object or a list of `[key, value]`
/// pairs is encoded like `urlencode(…, doseq=True)` (a list value repeats the key, `null` values
/// are dropped); a string is appended as is (it must be a valid query: no spaces, control or
/// non-ASCII characters, well-formed `%` escapes, no `#`). `None` for falsy `params`.
fn encode_params(params: Option<&Value>) -> Result<Option<String>, CommandError> {
    let Some(params) = params.filter(|p| !is_falsy(p)) else {
        return Ok(None);
    };
    let refuse = |reason: String| invalid_value("params", reason);
    let mut pairs: Vec<(&str, &Value)> = Vec::new();
    match params {
        Value::String(raw) => {
            if let Some(c) = raw
                .chars()
                .find(|c| c.is_control() || c.is_whitespace() || !c.is_ascii() || *c == '#')
            {
                return Err(refuse(format!(
                    "contains the character {c:?} (a string is sent as is: encode it, or send an object)"
                )));
            }
            percent_decode_once(raw)
                .map_err(|_| refuse("contains a malformed '%' escape".into()))?;
            return Ok(Some(raw.clone()));
        }
        Value::Object(map) => pairs.extend(map.iter().map(|(k, v)| (k.as_str(), v))),
        Value::Array(list) => {
            for pair in list {
                match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), v]) => pairs.push((k.as_str(), v)),
                    _ => {
                        return Err(refuse(
                            "as a list must hold [key, value] pairs with string keys".into(),
                        ));
                    }
                }
            }
        }
        _ => {
            return Err(refuse(
                "must be an object, a list of [key, value] pairs or a string".into(),
            ));
        }
    }
    let mut out = String::new();
    let mut push = |k: &str, v: &Value| -> Result<(), CommandError> {
        if v.is_null() {
            return Ok(());
        }
        let Some(text) = scalar_text(v) else {
            return Err(refuse(format!(
                "value of {:?} must be a string, number, boolean, null or a list of those",
                truncate(k)
            )));
        };
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&form_encode(k));
        out.push('=');
        out.push_str(&form_encode(&text));
        Ok(())
    };
    for (k, v) in pairs {
        match v {
            Value::Array(values) => {
                for v in values {
                    push(k, v)?;
                }
            }
            v => push(k, v)?,
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// The multipart body of an upload, or `None` when there is none to send (no `files`, or every
/// entry empty: then `data` is sent as without `files`, as the original does).
///
/// Each `files` entry is `{content_base64: string|null, filename?: string|null, content_type?:
/// string|null}`; an empty or null `content_base64` skips the entry. `data`, when present, must be
/// an object of scalars: its fields go first as text parts (the original drops them, defect R2).
/// A caller `Content-Type` other than `multipart/form-data` is refused (the body would not be what
/// it says); a `multipart/form-data` one is replaced by ours, which declares the real boundary.
fn encode_upload(
    headers: &[(HeaderName, HeaderValue)],
    data: Option<&Value>,
    files: Option<&Value>,
) -> Result<Option<Multipart>, CommandError> {
    let Some(files) = files.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let refuse = |reason: String| invalid_value("files", reason);
    let Value::Object(files) = files else {
        return Err(refuse(
            "must be an object: field name -> {filename, content_base64, content_type}".into(),
        ));
    };
    let mut entries = Vec::new();
    let mut upper_bound = 0usize;
    for (field, entry) in files {
        check_text("files", "a field name", field)?;
        let Value::Object(entry) = entry else {
            return Err(refuse(format!(
                "{:?} must be an object {{filename, content_base64, content_type}}",
                truncate(field)
            )));
        };
        let text = |key: &str| -> Result<Option<&str>, CommandError> {
            match entry.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => {
                    check_text("files", key, s)?;
                    Ok(Some(s.as_str()))
                }
                Some(_) => Err(refuse(format!(
                    "{:?}.{key} must be a string or null",
                    truncate(field)
                ))),
            }
        };
        let content = match entry.get("content_base64") {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) if s.is_empty() => continue,
            Some(Value::String(s)) => Content::Text(s.as_str()),
            // Decoded by the link while it arrived (`cloud::tap`).
            Some(v) if attachments::placeholder_id(v).is_some() => {
                match attachments::placeholder_id(v).and_then(attachments::take) {
                    Some(Attachment::Data(bytes)) if bytes.is_empty() => continue,
                    Some(Attachment::Data(bytes)) => Content::Decoded(bytes),
                    Some(Attachment::Invalid(reason)) => {
                        return Err(refuse(format!(
                            "{:?}.content_base64 {reason}",
                            truncate(field)
                        )));
                    }
                    Some(Attachment::TooLarge) => {
                        return Err(CommandError::UploadTooLarge {
                            limit: MAX_UPLOAD_BYTES,
                        });
                    }
                    Some(Attachment::Busy) => return Err(CommandError::UploadBusy),
                    None => {
                        return Err(refuse(format!(
                            "{:?}.content_base64 refers to no upload",
                            truncate(field)
                        )));
                    }
                }
            }
            Some(_) => {
                return Err(refuse(format!(
                    "{:?}.content_base64 must be a string or null",
                    truncate(field)
                )));
            }
        };
        let filename = text("filename")?.filter(|s| !s.is_empty()).unwrap_or(field);
        let content_type = text("content_type")?
            .filter(|s| !s.is_empty())
            .unwrap_or("application/octet-stream");
        HeaderValue::from_str(content_type).map_err(|_| {
            refuse(format!(
                "{:?}.content_type is not a valid header value",
                truncate(field)
            ))
        })?;
        upper_bound = upper_bound.saturating_add(content.upper_bound());
        entries.push((field, filename, content_type, content));
    }
    if entries.is_empty() {
        return Ok(None);
    }
    if let Some((_, ct)) = headers
        .iter()
        .find(|(n, _)| n == http::header::CONTENT_TYPE)
    {
        let essence = ct.to_str().unwrap_or("").split(';').next().unwrap_or("");
        if !essence.trim().eq_ignore_ascii_case("multipart/form-data") {
            return Err(invalid_value(
                "headers",
                "Content-Type must be multipart/form-data (or absent) when files are sent",
            ));
        }
    }
    let mut parts = Vec::new();
    match data.filter(|d| !is_falsy(d)) {
        None => {}
        Some(Value::Object(fields)) => {
            for (name, value) in fields {
                check_text("data", "a field name", name)?;
                if value.is_null() {
                    continue;
                }
                let Some(text) = scalar_text(value) else {
                    return Err(invalid_value(
                        "data",
                        format!(
                            "with files, field {:?} must be a string, number or boolean",
                            truncate(name)
                        ),
                    ));
                };
                parts.push(Part {
                    name: name.clone(),
                    file: None,
                    content: Bytes::from(text),
                });
            }
        }
        Some(_) => {
            return Err(invalid_value(
                "data",
                "must be an object of text fields when files are sent",
            ));
        }
    }
    // Refused before decoding anything: the bound is exact but for whitespace and padding.
    let exact: usize = entries.iter().map(|(_, _, _, c)| c.exact_len()).sum();
    if upper_bound > MAX_UPLOAD_BYTES && exact > MAX_UPLOAD_BYTES {
        return Err(CommandError::UploadTooLarge {
            limit: MAX_UPLOAD_BYTES,
        });
    }
    for (field, filename, content_type, content) in entries {
        let bytes = match content {
            Content::Decoded(bytes) => bytes,
            Content::Text(text) => multipart::decode_base64(text).map_err(|reason| {
                refuse(format!("{:?}.content_base64 {reason}", truncate(field)))
            })?,
        };
        parts.push(Part {
            name: field.clone(),
            file: Some(FileMeta {
                filename: filename.to_owned(),
                content_type: content_type.to_owned(),
            }),
            content: bytes,
        });
    }
    Ok(Some(Multipart::new(parts)))
}

/// A file's content: base64 text in the message, or already decoded by the link.
enum Content<'a> {
    Text(&'a str),
    Decoded(Bytes),
}

impl Content<'_> {
    fn upper_bound(&self) -> usize {
        match self {
            Self::Text(t) => multipart::decoded_len_upper_bound(t),
            Self::Decoded(b) => b.len(),
        }
    }

    fn exact_len(&self) -> usize {
        match self {
            Self::Text(t) => exact_decoded_len(t),
            Self::Decoded(b) => b.len(),
        }
    }
}

/// The decoded length of base64 `text` (whitespace and padding discounted), without decoding.
fn exact_decoded_len(text: &str) -> usize {
    let significant = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .count();
    significant / 4 * 3 + (significant % 4).saturating_sub(1)
}

/// Refuses control characters in a name that goes into a part header.
fn check_text(field: &'static str, what: &str, s: &str) -> Result<(), CommandError> {
    if s.chars().any(char::is_control) {
        return Err(invalid_value(
            field,
            format!("{what} {:?} contains control characters", truncate(s)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A command from its JSON form (well-typed: the topic's contract checks the types).
    fn cmd(v: Value) -> Result<HttpCommand, CommandError> {
        let m = v.as_object().expect("test input is an object");
        HttpCommand::new(
            m["method"].as_str().expect("method"),
            m["api"].as_str().expect("api"),
            m.get("port")
                .and_then(Value::as_u64)
                .map(|p| u16::try_from(p).expect("test port")),
            m.get("headers").and_then(Value::as_object),
            m.get("data"),
        )
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

#[cfg(test)]
mod upload_tests {
    use super::*;
    use serde_json::json;

    fn fields(v: &Value) -> Result<HttpCommand, CommandError> {
        HttpCommand::from_fields(&Fields {
            method: v["method"].as_str().expect("method"),
            api: v["api"].as_str().expect("api"),
            port: v
                .get("port")
                .and_then(Value::as_u64)
                .map(|p| u16::try_from(p).expect("port")),
            headers: v.get("headers").and_then(Value::as_object),
            params: v.get("params"),
            data: v.get("data"),
            files: v.get("files"),
        })
    }

    #[test]
    fn params_are_encoded_as_python_requests_encodes_them() {
        // upstream HEAD §14.4
        let c = fields(&json!({"method": "GET", "api": "api/x", "port": 8080,
            "params": {"a": "b c", "n": [1, 2], "z": null}}))
        .unwrap();
        assert_eq!(c.path_and_query, "api/x?a=b+c&n=1&n=2");
        let c = fields(&json!({"method": "GET", "api": "x?k=1",
            "params": [["t", true], ["u", "é/~*"], ["f", 1.5]]}))
        .unwrap();
        assert_eq!(c.path_and_query, "x?k=1&t=True&u=%C3%A9%2F~%2A&f=1.5");
        let c = fields(&json!({"method": "GET", "api": "x?", "params": "raw=1&b=%20"})).unwrap();
        assert_eq!(c.path_and_query, "x?raw=1&b=%20");
        for falsy in [json!(null), json!({}), json!([]), json!("")] {
            let c = fields(&json!({"method": "GET", "api": "x", "params": falsy})).unwrap();
            assert_eq!(c.path_and_query, "x");
        }
        for bad in [
            json!({"a": {"b": 1}}),
            json!({"a": [[1]]}),
            json!([["a"]]),
            json!([[1, "x"]]),
            json!("a b"),
            json!("a#b"),
            json!("a=%zz"),
            json!("<"),
            json!("a\"b"),
            json!(5),
        ] {
            assert!(
                matches!(
                    fields(&json!({"method": "GET", "api": "x", "params": bad})),
                    Err(CommandError::InvalidValue {
                        field: "params",
                        ..
                    })
                ),
                "{bad} accepted"
            );
        }
    }

    fn upload(extra: Value) -> Result<HttpCommand, CommandError> {
        let mut v = json!({"method": "POST", "api": "api/upload-file"});
        for (k, val) in extra.as_object().expect("object") {
            v[k] = val.clone();
        }
        fields(&v)
    }

    #[test]
    fn files_become_a_multipart_body_with_data_fields_first() {
        // upstream HEAD §2.8
        let c = upload(json!({"files": {"file": {"filename": "program.zip",
            "content_base64": "UEsDBA==", "content_type": "application/zip"}}}))
        .unwrap();
        assert_eq!(c.body, None);
        let m = c.multipart.as_ref().expect("multipart");
        assert_eq!(m.parts.len(), 1);
        assert_eq!(m.parts[0].content.as_ref(), b"PK\x03\x04");
        let r = c.request("10.203.194.2:8443".parse().unwrap()).unwrap();
        let ct = r.headers()[http::header::CONTENT_TYPE].to_str().unwrap();
        assert_eq!(ct, format!("multipart/form-data; boundary={}", m.boundary));
        assert_eq!(
            r.headers()[http::header::CONTENT_LENGTH].to_str().unwrap(),
            m.len().to_string()
        );
        assert_eq!(c.body_len(), m.len());

        // upstream HEAD §14.4, except that `data` is kept (R2) as text fields before the files.
        let c = upload(json!({"data": {"k": 1, "t": true, "n": null},
            "files": {"f": {"content_base64": "AA=="}, "empty": {"content_base64": ""},
                      "none": {"content_base64": null}},
            "headers": {"Content-Type": "multipart/form-data", "X-Test": "yes"}}))
        .unwrap();
        let m = c.multipart.as_ref().expect("multipart");
        let parts: Vec<_> = m
            .parts
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.file
                        .as_ref()
                        .map(|f| (f.filename.as_str(), f.content_type.as_str())),
                    p.content.as_ref(),
                )
            })
            .collect();
        assert_eq!(
            parts,
            [
                ("k", None, &b"1"[..]),
                ("t", None, &b"True"[..]),
                ("f", Some(("f", "application/octet-stream")), &b"\0"[..]),
            ]
        );
        let r = c.request("10.203.194.2:8443".parse().unwrap()).unwrap();
        let cts: Vec<_> = r
            .headers()
            .get_all(http::header::CONTENT_TYPE)
            .iter()
            .collect();
        assert_eq!(
            cts.len(),
            1,
            "the caller's boundary-less Content-Type is replaced"
        );
        assert!(cts[0].to_str().unwrap().contains(&m.boundary));
        assert_eq!(r.headers()["x-test"], "yes");

        // Every entry empty: no multipart, `data` as without files.
        let c = upload(json!({"data": {"k": 1}, "files": {"f": {"content_base64": ""}}})).unwrap();
        assert!(c.multipart.is_none());
        assert_eq!(c.body.as_deref(), Some(&b"{\"k\":1}"[..]));
    }

    #[test]
    fn malformed_uploads_are_refused_naming_the_field() {
        let refused = |extra: Value| match upload(extra.clone()) {
            Err(CommandError::InvalidValue { field, reason }) => format!("{field}: {reason}"),
            other => panic!("{extra} gave {other:?}"),
        };
        assert!(refused(json!({"files": "x"})).starts_with("files: must be an object"));
        assert!(
            refused(json!({"files": {"f": "x"}})).starts_with("files: \"f\" must be an object")
        );
        let r = refused(json!({"files": {"f": {"content_base64": "AA-_"}}}));
        assert!(
            r.starts_with("files: \"f\".content_base64 is not base64"),
            "{r}"
        );
        assert!(refused(json!({"files": {"f": {"content_base64": 5}}})).contains("content_base64"));
        assert!(refused(json!({"files": {"f\n": {"content_base64": "AA=="}}})).contains("control"));
        assert!(
            refused(json!({"files": {"f": {"content_base64": "AA==", "filename": "a\"\rb"}}}))
                .contains("control")
        );
        assert!(
            refused(json!({"files": {"f": {"content_base64": "AA==", "content_type": "a\u{7f}"}}}))
                .contains("control")
        );
        assert!(
            refused(json!({"files": {"f": {"content_base64": "AA=="}},
                "headers": {"Content-Type": "application/json"}}))
            .starts_with("headers: Content-Type must be multipart/form-data")
        );
        assert!(
            refused(json!({"files": {"f": {"content_base64": "AA=="}}, "data": "text"}))
                .starts_with("data: must be an object")
        );
        assert!(
            refused(json!({"files": {"f": {"content_base64": "AA=="}}, "data": {"o": {}}}))
                .starts_with("data: with files")
        );
    }

    #[test]
    fn uploads_over_the_limit_are_refused_before_decoding() {
        let at_limit = "A".repeat(MAX_UPLOAD_BYTES / 3 * 4 + 4); // 33554433 bytes decoded
        let refused = upload(json!({"files": {"f": {"content_base64": at_limit}}}));
        assert!(
            matches!(refused, Err(CommandError::UploadTooLarge { limit }) if limit == MAX_UPLOAD_BYTES)
        );
        assert_eq!(
            refused.unwrap_err().to_string(),
            "upload too large: the files decode to more than 33554432 bytes (limit 32 MiB)"
        );
        // Exactly the limit, padded: accepted.
        let exact = format!("{}AAA=", "A".repeat(MAX_UPLOAD_BYTES / 3 * 4));
        let c = upload(json!({"files": {"f": {"content_base64": exact}}})).unwrap();
        assert_eq!(c.multipart.unwrap().file_bytes(), MAX_UPLOAD_BYTES);
    }
}

#[cfg(test)]
mod attachment_tests {
    use super::*;
    use serde_json::json;

    fn with_content(content: Value) -> Result<HttpCommand, CommandError> {
        let files = json!({"f": {"filename": "p.zip", "content_base64": content}});
        HttpCommand::from_fields(&Fields {
            method: "POST",
            api: "api/upload-file",
            files: Some(&files),
            ..Fields::default()
        })
    }

    #[test]
    fn files_decoded_by_the_link_are_taken_by_placeholder_once() {
        let placeholder = attachments::put(Attachment::Data(Bytes::from_static(b"PK\x03\x04")));
        let c = with_content(placeholder.clone()).expect("accepted");
        let m = c.multipart.expect("multipart");
        assert_eq!(m.parts[0].content.as_ref(), b"PK\x03\x04");
        assert_eq!(m.parts[0].file.as_ref().unwrap().filename, "p.zip");
        // Taken: the same placeholder again refers to nothing.
        assert!(matches!(
            with_content(placeholder),
            Err(CommandError::InvalidValue { field: "files", reason }) if reason.contains("refers to no upload")
        ));
        assert!(matches!(
            with_content(attachments::put(Attachment::TooLarge)),
            Err(CommandError::UploadTooLarge { .. })
        ));
        assert!(matches!(
            with_content(attachments::put(Attachment::Busy)),
            Err(CommandError::UploadBusy)
        ));
        assert!(matches!(
            with_content(attachments::put(Attachment::Invalid("is not base64: x".into()))),
            Err(CommandError::InvalidValue { field: "files", reason }) if reason.contains("is not base64")
        ));
    }
}
