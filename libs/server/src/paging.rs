//! AIP-158 pagination for the ops List RPCs: page sizes, and opaque page tokens that carry
//! the last key of the page before and a fingerprint of the filters they were made for.
//! Keyset pages stay correct while rows are added: nothing is skipped or listed twice.

use crate::grpc::invalid_argument;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message as _;
use tonic::Status;

/// What a page token holds (protobuf, then base64url).
#[derive(Clone, PartialEq, prost::Message)]
struct Token {
    /// The key of the last item on the page before.
    #[prost(string, tag = "1")]
    after: String,
    #[prost(fixed64, tag = "2")]
    filters: u64,
}

/// One List request's paging: how many to return and after which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub size: u64,
    /// The key to continue after; `None` on the first page.
    pub after: Option<String>,
    filters: u64,
}

impl Page {
    /// Reads `page_size` (0: `default`, above `max`: `max`, negative: INVALID_ARGUMENT) and
    /// `page_token`, which must come from a request with the same `filters` (each filter's
    /// value as text, in a fixed order).
    pub fn parse(page_size: i32, page_token: &str, default: u64, max: u64, filters: &[&str]) -> Result<Page, Status> {
        let size = match page_size {
            ..0 => return Err(invalid_argument("page_size", "must not be negative")),
            0 => default,
            n => (n as u64).min(max),
        };
        let filters = fingerprint(filters);
        let page_token = page_token.trim();
        if page_token.is_empty() {
            return Ok(Page { size, after: None, filters });
        }
        let not_ours = || invalid_argument("page_token", "is not a page token from this List RPC");
        let bytes = URL_SAFE_NO_PAD.decode(page_token).map_err(|_| not_ours())?;
        let token = Token::decode(bytes.as_slice()).map_err(|_| not_ours())?;
        if token.after.is_empty() {
            return Err(not_ours());
        }
        if token.filters != filters {
            return Err(invalid_argument("page_token", "was made for other filters: send the same filters with it"));
        }
        Ok(Page { size, after: Some(token.after), filters })
    }

    /// How many rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch(&self) -> u64 {
        self.size + 1
    }

    /// Cuts `rows` (fetched with [`Page::fetch`]) to the page and makes the token for the
    /// next one from the last row's key; empty when this is the last page.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> &str) -> (Vec<T>, String) {
        if rows.len() as u64 <= self.size {
            return (rows, String::new());
        }
        rows.truncate(self.size as usize);
        let after = rows.last().map(|row| key(row).to_owned()).unwrap_or_default();
        let token = Token { after, filters: self.filters };
        (rows, URL_SAFE_NO_PAD.encode(token.encode_to_vec()))
    }
}

/// FNV-1a over the filter values: the same in every process and release, so a token works
/// on any instance.
fn fingerprint(filters: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in filters.iter().flat_map(|f| f.bytes().chain([0xff])) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(status: Status) -> String {
        crate::grpc::bad_request_field(&status).unwrap()
    }

    #[test]
    fn sizes_follow_aip_158() {
        assert_eq!(Page::parse(0, "", 50, 1000, &[]).unwrap().size, 50);
        assert_eq!(Page::parse(7, "", 50, 1000, &[]).unwrap().size, 7);
        assert_eq!(Page::parse(5000, "", 50, 1000, &[]).unwrap().size, 1000);
        assert_eq!(field(Page::parse(-1, "", 50, 1000, &[]).unwrap_err()), "page_size");
    }

    #[test]
    fn a_token_continues_only_the_listing_it_came_from() {
        let first = Page::parse(2, "", 50, 1000, &["verified", ""]).unwrap();
        let (rows, token) = first.finish(vec!["c", "b", "a"], |r| r);
        assert_eq!(rows, ["c", "b"]);
        let second = Page::parse(2, &token, 50, 1000, &["verified", ""]).unwrap();
        assert_eq!(second.after.as_deref(), Some("b"));
        let (rows, token) = second.finish(vec!["a"], |r| r);
        assert_eq!((rows, token), (vec!["a"], String::new()), "the last page has no token");

        let (_, token) = first.finish(vec!["c", "b", "a"], |r| r);
        let other_filters = Page::parse(2, &token, 50, 1000, &["unverified", ""]).unwrap_err();
        assert_eq!(field(other_filters), "page_token");
        // Filters are told apart by position, not just concatenated.
        assert_ne!(fingerprint(&["ab", ""]), fingerprint(&["a", "b"]));
        for garbage in ["!!", "AAAA", "bm90IGEgdG9rZW4", &"x".repeat(5000)] {
            assert_eq!(field(Page::parse(2, garbage, 50, 1000, &[]).unwrap_err()), "page_token", "{garbage}");
        }
    }
}
