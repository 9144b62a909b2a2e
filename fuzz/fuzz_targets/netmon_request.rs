//! netmon's command channel (upstream-head §4.3): a line a client of its socket writes, read by
//! `netmon_proto::decode_request`. The socket lives on a volume other containers may share, so
//! the line is untrusted. Properties: nothing panics; an accepted request written back by the
//! agent's encoder reads back as the same request; a refused one gets a failure answer with an
//! error text (never a silent or successful one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netmon_proto::decode_request;

fuzz_target!(|data: &[u8]| {
    match decode_request(data) {
        Ok(request) => {
            let line = serde_json::to_vec(&request).expect("a request serialises");
            let again = decode_request(&line).unwrap_or_else(|e| {
                panic!(
                    "{request:?} written as {} does not read back: {e}",
                    String::from_utf8_lossy(&line)
                )
            });
            assert_eq!(again, request);
        }
        Err(e) => {
            let answer = e.response();
            assert!(!answer.success, "{e:?}");
            assert!(
                answer.error.as_deref().is_some_and(|t| !t.is_empty()),
                "{e:?}"
            );
        }
    }
});
