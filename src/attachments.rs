//! Binary payloads that arrived beside a message instead of inside it: the decoded files of a
//! `run_command` upload, which the cloud link decodes while the frame arrives (`cloud::tap`) and
//! replaces in the message by a placeholder `{"_placeholder": true, "num": <id>}` (Socket.IO's own
//! attachment convention). The command takes them back by id (`runtime::command`).
//!
//! Owns the store and the count of attachment bytes resident anywhere in the agent (stored or held
//! by a command), so a second upload cannot add another 32 MiB while one is in flight. Must never
//! hand an attachment out twice or keep one after it was taken.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

/// Most attachment bytes resident at once, across requests (one upload at the limit).
pub const BUDGET: usize = 32 << 20;
/// An attachment nobody took within this time is dropped: its message was refused before the
/// command looked at its files (a contract error, too many requests in flight), and it must not
/// hold the upload budget. A command takes its attachments within milliseconds of the message's
/// end.
const STALE: Duration = Duration::from_secs(30);

/// What the decoding of one attachment produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// The decoded bytes.
    Data(Bytes),
    /// The text was not base64 (the reason).
    Invalid(String),
    /// It decoded to more than the limit: decoding stopped.
    TooLarge,
    /// Another upload held the memory budget when it arrived: not decoded.
    Busy,
}

struct Entry {
    attachment: Attachment,
    at: Instant,
}

fn store() -> &'static Mutex<HashMap<u64, Entry>> {
    static STORE: OnceLock<Mutex<HashMap<u64, Entry>>> = OnceLock::new();
    STORE.get_or_init(|| Mutex::new(HashMap::new()))
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static RESIDENT: AtomicUsize = AtomicUsize::new(0);

/// Attachment bytes resident now (stored, being decoded, or held by a command).
pub fn resident() -> usize {
    RESIDENT.load(Ordering::Relaxed)
}

/// Counts `bytes` as resident until the returned guard drops (reserve before decoding).
pub fn reserve(bytes: usize) -> Reservation {
    RESIDENT.fetch_add(bytes, Ordering::Relaxed);
    Reservation(bytes)
}

/// Resident attachment bytes; released on drop.
#[derive(Debug)]
pub struct Reservation(usize);

impl Drop for Reservation {
    fn drop(&mut self) {
        RESIDENT.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Decoded bytes that stay counted as resident for as long as any `Bytes` of them lives.
struct Counted {
    data: Vec<u8>,
    _reservation: Reservation,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// `data` as `Bytes` that keep `reservation` (which must cover `data`'s capacity) until the last
/// clone drops.
pub fn counted(data: Vec<u8>, reservation: Reservation) -> Bytes {
    Bytes::from_owner(Counted {
        data,
        _reservation: reservation,
    })
}

/// Drops the attachments nobody took in time (see [`STALE`]).
pub fn purge_stale() {
    let mut store = store().lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    store.retain(|_, e| now.duration_since(e.at) < STALE);
}

/// Stores `attachment` and returns its placeholder value.
pub fn put(attachment: Attachment) -> Value {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    purge_stale();
    let mut store = store().lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    store.insert(
        id,
        Entry {
            attachment,
            at: now,
        },
    );
    placeholder(id)
}

/// The placeholder text for attachment `id`.
pub fn placeholder(id: u64) -> Value {
    serde_json::json!({"_placeholder": true, "num": id})
}

/// The attachment id of a placeholder value, if `value` is one.
pub fn placeholder_id(value: &Value) -> Option<u64> {
    let map = value.as_object()?;
    (map.len() == 2 && map.get("_placeholder") == Some(&Value::Bool(true)))
        .then(|| map.get("num")?.as_u64())
        .flatten()
}

/// Takes attachment `id` out of the store (`None`: unknown, already taken or stale).
pub fn take(id: u64) -> Option<Attachment> {
    let mut store = store().lock().unwrap_or_else(|p| p.into_inner());
    store.remove(&id).map(|e| e.attachment)
}

/// Decodes base64 characters (no whitespace): standard alphabet, with padding when their count is
/// a multiple of 4, else without. Trailing bits are not checked (Python does not check them).
pub fn decode_base64_chars(chars: &[u8]) -> Result<Vec<u8>, String> {
    let encoding = if chars.len().is_multiple_of(4) {
        padded()
    } else {
        unpadded()
    };
    let len = encoding
        .decode_len(chars.len())
        .map_err(|e| format!("is not base64: {e}"))?;
    let mut out = vec![0u8; len];
    let written = encoding
        .decode_mut(chars, &mut out)
        .map_err(|e| format!("is not base64: {}", e.error))?;
    out.truncate(written);
    Ok(out)
}

fn padded() -> &'static data_encoding::Encoding {
    static E: OnceLock<data_encoding::Encoding> = OnceLock::new();
    E.get_or_init(|| {
        let mut spec = data_encoding::BASE64.specification();
        spec.check_trailing_bits = false;
        spec.encoding().unwrap_or(data_encoding::BASE64)
    })
}

fn unpadded() -> &'static data_encoding::Encoding {
    static E: OnceLock<data_encoding::Encoding> = OnceLock::new();
    E.get_or_init(|| {
        let mut spec = data_encoding::BASE64_NOPAD.specification();
        spec.check_trailing_bits = false;
        spec.encoding().unwrap_or(data_encoding::BASE64_NOPAD)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attachment_is_taken_once_and_counted_while_it_lives() {
        let reservation = reserve(10);
        let bytes = counted(vec![1, 2, 3], reservation);
        let value = put(Attachment::Data(bytes));
        let id = placeholder_id(&value).expect("a placeholder");
        assert_eq!(
            take(id),
            Some(Attachment::Data(Bytes::from_static(&[1, 2, 3])))
        );
        assert_eq!(take(id), None);
        assert_eq!(placeholder_id(&serde_json::json!({"num": 1})), None);
    }
}
