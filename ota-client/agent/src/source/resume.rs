//! Resuming a download without splicing two files: which status ends an attempt, and whether a
//! response to `Range: bytes=<pos>-` continues the same file exactly at `pos`. Pure: facts in,
//! verdicts out.

use ota_protocol::client::ErrorKind;

/// What identifies the file on the server, sent back as `If-Range`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validator {
    /// `ETag` of the first response.
    pub etag: Option<String>,
    /// `Last-Modified` of the first response.
    pub last_modified: Option<String>,
}

impl Validator {
    /// The `If-Range` value: a strong ETag, else the Last-Modified date (weak ETags are not
    /// allowed in If-Range).
    pub fn if_range(&self) -> Option<&str> {
        match &self.etag {
            Some(e) if !e.starts_with("W/") => Some(e),
            _ => self.last_modified.as_deref(),
        }
    }
}

/// The response headers the resume logic looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    /// HTTP status.
    pub status: u16,
    /// `Content-Range`.
    pub content_range: Option<String>,
    /// `Content-Length`.
    pub content_length: Option<u64>,
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
}

/// What to do with a response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx.
    Ok,
    /// Retrying cannot help.
    Permanent(&'static str),
    /// Try again later.
    Retry,
}

/// Classifies a status code.
pub fn classify(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Ok,
        401 | 403 => StatusClass::Permanent(
            "the server refuses access to this bundle (check the robot's credentials)",
        ),
        404 | 410 => StatusClass::Permanent("the server does not have this bundle (check the URL)"),
        416 => StatusClass::Permanent("the server cannot serve the requested range"),
        // Which statuses are passing is the API client's rule, decided once.
        _ if ErrorKind::for_status(status) == ErrorKind::Retry => StatusClass::Retry,
        _ => StatusClass::Permanent("unexpected response"),
    }
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`).
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (start <= end).then_some((start, end, total))
}

/// Checks the first response (no Range). Returns the total length and the validator.
pub fn check_first(resp: &ResponseFacts) -> Result<(Option<u64>, Validator), String> {
    if resp.status != 200 {
        return Err(format!("expected HTTP 200, got {}", resp.status));
    }
    Ok((
        resp.content_length,
        Validator {
            etag: resp.etag.clone(),
            last_modified: resp.last_modified.clone(),
        },
    ))
}

/// Checks that a response to `Range: bytes=<pos>-` continues the same file exactly at `pos`.
pub fn check_resume(
    pos: u64,
    total: Option<u64>,
    validator: &Validator,
    resp: &ResponseFacts,
) -> Result<(), String> {
    if resp.status == 200 {
        return Err("the server sent the whole file instead of the missing range (the bundle changed on the server, or it does not support ranges)".into());
    }
    if resp.status != 206 {
        return Err(format!(
            "expected HTTP 206 for a range request, got {}",
            resp.status
        ));
    }
    let Some((start, end, range_total)) =
        resp.content_range.as_deref().and_then(parse_content_range)
    else {
        return Err("a 206 response without a valid Content-Range".into());
    };
    if start != pos {
        return Err(format!(
            "asked for byte {pos} onwards, the server sent from byte {start}"
        ));
    }
    if let (Some(t), Some(rt)) = (total, range_total) {
        if t != rt {
            return Err(format!(
                "the file is now {rt} bytes, it was {t} (the bundle changed on the server)"
            ));
        }
    }
    if let Some(t) = total.or(range_total) {
        if end + 1 != t {
            return Err(format!(
                "the server sent bytes {start}-{end} of {t}, not the rest of the file"
            ));
        }
    }
    if let (Some(a), Some(b)) = (&validator.etag, &resp.etag) {
        if a != b {
            return Err(format!(
                "ETag changed from {a} to {b} (the bundle changed on the server)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(range: &str, etag: Option<&str>) -> ResponseFacts {
        ResponseFacts {
            status: 206,
            content_range: Some(range.into()),
            etag: etag.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 100-999/1000"),
            Some((100, 999, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        assert_eq!(parse_content_range("bytes 5-4/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes x-1/2"), None);
    }

    #[test]
    fn status_classes() {
        for s in [401, 403, 404, 410, 416] {
            assert!(matches!(classify(s), StatusClass::Permanent(_)), "{s}");
        }
        for s in [429, 500, 502, 503, 504] {
            assert_eq!(classify(s), StatusClass::Retry, "{s}");
        }
        assert_eq!(classify(206), StatusClass::Ok);
    }

    #[test]
    fn resume_accepts_only_the_exact_continuation_of_the_same_file() {
        let v = Validator {
            etag: Some("\"v1\"".into()),
            last_modified: None,
        };
        assert_eq!(v.if_range(), Some("\"v1\""));
        assert!(check_resume(
            100,
            Some(1000),
            &v,
            &partial("bytes 100-999/1000", Some("\"v1\""))
        )
        .is_ok());
        assert!(check_resume(100, Some(1000), &v, &partial("bytes 100-999/1000", None)).is_ok());
        let e = check_resume(
            100,
            Some(1000),
            &v,
            &partial("bytes 100-999/1000", Some("\"v2\"")),
        )
        .unwrap_err();
        assert!(e.contains("ETag"), "{e}");
        let e = check_resume(
            100,
            Some(1000),
            &v,
            &partial("bytes 0-999/1000", Some("\"v1\"")),
        )
        .unwrap_err();
        assert!(e.contains("from byte 0"), "{e}");
        let e = check_resume(
            100,
            Some(1000),
            &v,
            &partial("bytes 100-1199/1200", Some("\"v1\"")),
        )
        .unwrap_err();
        assert!(e.contains("changed"), "{e}");
        let e = check_resume(
            100,
            Some(1000),
            &v,
            &partial("bytes 100-499/1000", Some("\"v1\"")),
        )
        .unwrap_err();
        assert!(e.contains("not the rest"), "{e}");
        // If-Range failed: the server sends the whole (new) file with 200
        let whole = ResponseFacts {
            status: 200,
            content_length: Some(1000),
            ..Default::default()
        };
        assert!(check_resume(100, Some(1000), &v, &whole)
            .unwrap_err()
            .contains("whole file"));
        assert!(check_resume(
            100,
            Some(1000),
            &v,
            &ResponseFacts {
                status: 206,
                ..Default::default()
            }
        )
        .is_err());
    }

    #[test]
    fn weak_etags_fall_back_to_last_modified() {
        let v = Validator {
            etag: Some("W/\"x\"".into()),
            last_modified: Some("Tue, 01 Jan 2030 00:00:00 GMT".into()),
        };
        assert_eq!(v.if_range(), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
        assert_eq!(Validator::default().if_range(), None);
    }
}
