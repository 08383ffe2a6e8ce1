//! The fuzz target `admin` (`fuzz/`), replayed on stable by the corpus test:
//! one request line of the admin protocol must be refused with a message or be
//! a command `help` lists; it never panics.

/// Target `admin`: one request line of the admin protocol. A refused line gets a
/// message; an accepted one is a command `help` lists.
pub fn request(data: &[u8]) -> bool {
    match super::protocol::parse_request(data) {
        Ok(req) => {
            let v: serde_json::Value = serde_json::from_slice(data)
                .unwrap_or_else(|e| panic!("accepted a request that is not JSON: {e}"));
            let cmd = v.get("cmd").and_then(|c| c.as_str()).unwrap_or_default();
            assert!(
                super::protocol::commands().iter().any(|c| c.cmd == cmd),
                "accepted {req:?} under a command help does not list: {cmd:?}"
            );
            true
        }
        Err(msg) => {
            assert!(!msg.to_string().is_empty(), "an empty refusal");
            false
        }
    }
}
