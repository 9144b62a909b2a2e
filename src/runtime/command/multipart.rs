//! The `multipart/form-data` body of an upload (`run_command` with `files`), laid out byte for byte
//! as the original builds it (urllib3 `encode_multipart_formdata`, upstream HEAD §2.5), and the
//! strict base64 decoding of the cloud's `content_base64`. Pure: no I/O.
//!
//! Must never: copy a file's bytes after decoding them (the body is a list of chunks; the decoded
//! file is one of them), or accept base64 that Python's lenient decoder would silently corrupt.

use bytes::Bytes;

/// One part of the form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The form field name.
    pub name: String,
    /// `Some` for a file part (`filename="…"` plus a `Content-Type` line), `None` for a text field.
    pub file: Option<FileMeta>,
    /// The part's content (decoded file bytes or the field's text).
    pub content: Bytes,
}

/// What a file part declares besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// `filename` (the field name when the cloud gave none).
    pub filename: String,
    /// The part's `Content-Type` (`application/octet-stream` when the cloud gave none).
    pub content_type: String,
}

/// A `multipart/form-data` body: text fields first, then files, in request order.
#[derive(Clone, PartialEq, Eq)]
pub struct Multipart {
    /// 32 lowercase hex characters (16 random bytes), as urllib3 makes it.
    pub boundary: String,
    /// The parts, in the order they are sent.
    pub parts: Vec<Part>,
}

impl std::fmt::Debug for Multipart {
    /// Names and sizes only: contents may be programs or credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<(&str, usize)> = self
            .parts
            .iter()
            .map(|p| (p.name.as_str(), p.content.len()))
            .collect();
        f.debug_struct("Multipart")
            .field("boundary", &self.boundary)
            .field("parts", &parts)
            .finish()
    }
}

impl Multipart {
    /// A body with a fresh random boundary.
    pub fn new(parts: Vec<Part>) -> Self {
        let bytes: [u8; 16] = rand::random();
        let boundary = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self { boundary, parts }
    }

    /// The request's `Content-Type` value, declaring the real boundary.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The body as chunks, in order: each part's head, its content (shared, not copied), `\r\n`,
    /// and the closing delimiter.
    pub fn chunks(&self) -> Vec<Bytes> {
        let mut chunks = Vec::with_capacity(self.parts.len() * 3 + 1);
        for part in &self.parts {
            let mut head = format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{}\"",
                self.boundary,
                escape_param(&part.name)
            );
            if let Some(file) = &part.file {
                head.push_str(&format!(
                    "; filename=\"{}\"\r\nContent-Type: {}",
                    escape_param(&file.filename),
                    file.content_type
                ));
            }
            head.push_str("\r\n\r\n");
            chunks.push(Bytes::from(head));
            chunks.push(part.content.clone());
            chunks.push(Bytes::from_static(b"\r\n"));
        }
        chunks.push(Bytes::from(format!("--{}--\r\n", self.boundary)));
        chunks
    }

    /// The exact body length in bytes (the `Content-Length` to send).
    pub fn len(&self) -> u64 {
        self.chunks().iter().map(|c| c.len() as u64).sum()
    }

    /// `true` when there are no parts (never built: an upload without parts sends no multipart).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Bytes of file content (what the upload limit counts).
    pub fn file_bytes(&self) -> usize {
        self.parts
            .iter()
            .filter(|p| p.file.is_some())
            .map(|p| p.content.len())
            .sum()
    }
}

/// urllib3 2.x `format_multipart_header_param`: `"` → `%22`, CR → `%0D`, LF → `%0A`; anything else
/// (UTF-8 included) as is. Control characters are refused before this is reached.
fn escape_param(s: &str) -> String {
    s.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// How many bytes `text` decodes to at most (whitespace counted as data: an upper bound, cheap,
/// used to refuse an oversized upload before decoding anything).
pub fn decoded_len_upper_bound(text: &str) -> usize {
    text.len().div_ceil(4) * 3
}

/// Decodes standard base64 (`+/`, `=` padding, also unpadded), skipping ASCII whitespace.
/// Anything else is refused, including the URL-safe `-`/`_` that Python's lenient decoder drops
/// (producing a corrupt file silently). The output is allocated once, at its exact size.
pub fn decode_base64(text: &str) -> Result<Bytes, String> {
    let owned;
    let mut input = text.as_bytes();
    if input.iter().any(u8::is_ascii_whitespace) {
        owned = input
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect::<Vec<u8>>();
        input = &owned;
    }
    crate::attachments::decode_base64_chars(input).map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_strict_about_the_alphabet_and_lenient_about_whitespace_and_padding() {
        assert_eq!(decode_base64("UEsDBA==").unwrap().as_ref(), b"PK\x03\x04");
        assert_eq!(
            decode_base64("UEsD\nBA==\r\n").unwrap().as_ref(),
            b"PK\x03\x04"
        );
        assert_eq!(decode_base64("UEsDBA").unwrap().as_ref(), b"PK\x03\x04");
        assert_eq!(decode_base64("").unwrap().as_ref(), b"");
        // Non-canonical trailing bits: Python accepts them, so do we.
        assert_eq!(decode_base64("AB==").unwrap().as_ref(), &[0u8]);
        for bad in ["UEs-BA==", "UEs_BA==", "UEsDBA=", "U", "UEsD*A==", "=UEs"] {
            assert!(decode_base64(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_body_is_laid_out_as_urllib3_lays_it_out() {
        let mut body = Multipart::new(vec![
            Part {
                name: "k".into(),
                file: None,
                content: Bytes::from_static(b"v"),
            },
            Part {
                name: "fi\"le".into(),
                file: Some(FileMeta {
                    filename: "program.zip".into(),
                    content_type: "application/zip".into(),
                }),
                content: Bytes::from_static(b"PK\x03\x04"),
            },
        ]);
        assert_eq!(body.boundary.len(), 32);
        assert!(body.boundary.bytes().all(|b| b.is_ascii_hexdigit()));
        body.boundary = "b".into();
        let bytes: Vec<u8> = body.chunks().concat();
        assert_eq!(
            bytes,
            b"--b\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\nv\r\n\
              --b\r\nContent-Disposition: form-data; name=\"fi%22le\"; filename=\"program.zip\"\r\n\
              Content-Type: application/zip\r\n\r\nPK\x03\x04\r\n--b--\r\n"
        );
        assert_eq!(body.len(), bytes.len() as u64);
        assert_eq!(body.file_bytes(), 4);
        assert_eq!(body.content_type(), "multipart/form-data; boundary=b");
    }
}
