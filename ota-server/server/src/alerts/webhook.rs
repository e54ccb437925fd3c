//! The alert webhook's pure parts: the body, its signature and the retry schedule. Sending is behind
//! [`Sender`] (`crate::services::alerts` holds a reqwest one; tests their own).

use std::time::Duration;

use hmac::{Hmac, Mac};
use ota_protocol::alerts::AlertNotice;
use sha2::Sha256;

/// The signature header: `sha256=` and the hex HMAC-SHA256 of the body under the webhook secret (GitHub's
/// scheme, so receivers have code for it).
pub const SIGNATURE_HEADER: &str = "X-OTA-Signature";

/// Delivery attempts of one notice before it is dropped (and logged).
pub const MAX_ATTEMPTS: u32 = 6;

/// The delay before attempt `attempt` (1-based; the first is immediate): 1 s, 2 s, 4 s, … capped at 60 s;
/// `None` past [`MAX_ATTEMPTS`].
pub fn retry_delay(attempt: u32) -> Option<Duration> {
    match attempt {
        0 | 1 => Some(Duration::ZERO),
        a if a <= MAX_ATTEMPTS => Some(Duration::from_secs((1u64 << (a - 2).min(6)).min(60))),
        _ => None,
    }
}

/// Whether an answer status means delivered (2xx), worth a retry (5xx, 408, 429, no answer: `None`) or
/// refused for good (other 4xx: the receiver does not want this body; retrying sends the same).
pub fn outcome(status: Option<u16>) -> Outcome {
    match status {
        Some(s) if (200..300).contains(&s) => Outcome::Delivered,
        Some(408 | 429) | None => Outcome::Retry,
        Some(s) if s >= 500 => Outcome::Retry,
        Some(_) => Outcome::Refused,
    }
}

/// What one attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted.
    Delivered,
    /// Try again later.
    Retry,
    /// Refused for good.
    Refused,
}

/// The body of a notice.
pub fn body(notice: &AlertNotice) -> Vec<u8> {
    serde_json::to_vec(notice).unwrap_or_else(|e| unreachable!("a notice always encodes: {e}"))
}

/// The signature header's value for `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|e| unreachable!("HMAC takes keys of any length: {e}"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends one signed body to the webhook; the answer's status, or an error when there was none.
pub trait Sender: Send + Sync + 'static {
    /// POSTs `body` (JSON) with the signature header.
    fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        signature: String,
    ) -> futures_util::future::BoxFuture<'static, Result<u16, String>>;
}

/// [`Sender`] over reqwest (10 s timeout).
pub struct HttpSender(reqwest::Client);

impl HttpSender {
    /// A sender with its own connection pool.
    pub fn new() -> Result<Self, String> {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map(HttpSender)
            .map_err(|e| format!("cannot build the webhook's HTTP client: {e}"))
    }
}

impl Sender for HttpSender {
    fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        signature: String,
    ) -> futures_util::future::BoxFuture<'static, Result<u16, String>> {
        let request = self
            .0
            .post(url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body);
        Box::pin(async move {
            request
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The schedule never shrinks, never exceeds a minute and ends after MAX_ATTEMPTS.
        #[test]
        fn schedule(a in 1u32..20) {
            match (retry_delay(a), retry_delay(a + 1)) {
                (Some(d), Some(next)) => {
                    prop_assert!(next >= d);
                    prop_assert!(next <= Duration::from_secs(60));
                }
                (Some(_), None) => prop_assert_eq!(a, MAX_ATTEMPTS),
                (None, next) => {
                    prop_assert!(a > MAX_ATTEMPTS);
                    prop_assert_eq!(next, None);
                }
            }
        }

        /// Exactly 2xx delivers; 5xx, 408, 429 and no answer retry; other statuses are refused.
        #[test]
        fn outcomes(s in 100u16..600) {
            let o = outcome(Some(s));
            prop_assert_eq!(o == Outcome::Delivered, (200..300).contains(&s));
            prop_assert_eq!(o == Outcome::Retry, s >= 500 || s == 408 || s == 429);
        }

        /// The signature depends on every byte and on the secret.
        #[test]
        fn signature_binds_body_and_secret(body in proptest::collection::vec(any::<u8>(), 1..64), i in any::<prop::sample::Index>()) {
            let s = signature(b"secret", &body);
            prop_assert!(s.starts_with("sha256=") && s.len() == 7 + 64);
            let mut other = body.clone();
            let at = i.index(other.len());
            other[at] ^= 1;
            prop_assert_ne!(&s, &signature(b"secret", &other));
            prop_assert_ne!(&s, &signature(b"secreT", &body));
        }
    }

    #[test]
    fn first_attempts() {
        assert_eq!(retry_delay(1), Some(Duration::ZERO));
        assert_eq!(retry_delay(2), Some(Duration::from_secs(1)));
        assert_eq!(retry_delay(3), Some(Duration::from_secs(2)));
        assert_eq!(outcome(None), Outcome::Retry);
    }
}
