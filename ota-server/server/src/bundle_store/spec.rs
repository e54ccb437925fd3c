//! `--bundle-store URL`: which [`super::BundleStore`] a server uses, parsed without I/O.
//!
//! * absent, `local` or `file:` — the data directory's `blobs/` (the default);
//! * `s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION]` — an S3-compatible store: objects are
//!   `PREFIX/<bundle id>`; `endpoint` for a store other than AWS (Garage, MinIO, Ceph: path-style requests,
//!   `http://` allowed), `region` defaults to `us-east-1`. Credentials come from the standard
//!   `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) environment, never the URL.

use std::fmt;

/// Where bundles live.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum StoreSpec {
    /// `DATA_DIR/blobs`.
    #[default]
    Local,
    /// An S3-compatible store.
    S3(S3Spec),
}

/// An S3 bucket (and prefix) on an endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Spec {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix, empty or ending in `/`.
    pub prefix: String,
    /// Endpoint URL for a non-AWS store.
    pub endpoint: Option<String>,
    /// Region (signing).
    pub region: String,
    /// Access key id; `None`: from the environment.
    pub access_key_id: Option<String>,
    /// Secret key; `None`: from the environment.
    pub secret_access_key: Option<String>,
}

impl fmt::Debug for S3Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for S3Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)?;
        if let Some(e) = &self.endpoint {
            write!(f, " at {e}")?;
        }
        Ok(())
    }
}

const HELP: &str = "expected local or s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION]";

impl StoreSpec {
    /// Parses a `--bundle-store` value.
    pub fn parse(url: &str) -> Result<StoreSpec, String> {
        let url = url.trim();
        if url.is_empty() || url == "local" || url == "file:" {
            return Ok(StoreSpec::Local);
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(format!("unknown bundle store {url:?}: {HELP}"));
        };
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(format!(
                "bundle store {url:?}: bad bucket name {bucket:?}; {HELP}"
            ));
        }
        let prefix = prefix.trim_matches('/');
        let mut spec = S3Spec {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("endpoint", v)) if v.starts_with("http://") || v.starts_with("https://") => {
                    spec.endpoint = Some(v.trim_end_matches('/').to_string())
                }
                Some(("region", v)) if !v.is_empty() => spec.region = v.to_string(),
                _ => {
                    return Err(format!(
                        "bundle store {url:?}: unknown or malformed parameter {pair:?} (endpoint=http(s)://..., region=...)"
                    ))
                }
            }
        }
        Ok(StoreSpec::S3(spec))
    }
}

/// How long a presigned download URL is valid. Each request of a robot's ranged download asks the server
/// again and gets a fresh URL; a GET that started in time runs to its end.
pub const PRESIGN_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// `--bundle-store` and `--presign-downloads` together: the store, and how long presigned URLs live (`None`:
/// downloads go through the server). Presigning needs a store with URLs of its own.
pub fn choose(
    url: &str,
    presign: bool,
) -> Result<(StoreSpec, Option<std::time::Duration>), String> {
    let spec = StoreSpec::parse(url)?;
    match (&spec, presign) {
        (StoreSpec::Local, true) => Err(
            "--presign-downloads needs an s3:// --bundle-store: the local directory has no URL to presign".into(),
        ),
        (_, true) => Ok((spec, Some(PRESIGN_TTL))),
        (_, false) => Ok((spec, None)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(StoreSpec::parse("local"), Ok(StoreSpec::Local));
        assert_eq!(StoreSpec::parse(""), Ok(StoreSpec::Local));
        let StoreSpec::S3(s) = StoreSpec::parse(
            "s3://ota-bundles/fleet/a/?endpoint=http://127.0.0.1:3900/&region=garage",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (
                s.bucket.as_str(),
                s.prefix.as_str(),
                s.endpoint.as_deref(),
                s.region.as_str()
            ),
            (
                "ota-bundles",
                "fleet/a/",
                Some("http://127.0.0.1:3900"),
                "garage"
            )
        );
        let StoreSpec::S3(s) = StoreSpec::parse("s3://b").unwrap() else {
            panic!()
        };
        assert_eq!(
            (s.prefix.as_str(), s.region.as_str(), s.endpoint),
            ("", "us-east-1", None)
        );
        for bad in [
            "s3://",
            "s3://B",
            "gs://b",
            "s3://b?endpoint=ftp://x",
            "s3://b?secret=x",
            "s3://b?region=",
        ] {
            assert!(StoreSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn presigning_needs_a_store_with_urls() {
        assert!(choose("local", true)
            .unwrap_err()
            .contains("--presign-downloads"));
        assert_eq!(choose("local", false), Ok((StoreSpec::Local, None)));
        let (spec, ttl) = choose("s3://b?endpoint=http://127.0.0.1:9", true).unwrap();
        assert!(matches!(spec, StoreSpec::S3(_)) && ttl == Some(PRESIGN_TTL));
        assert_eq!(choose("s3://b", false).unwrap().1, None);
    }

    proptest! {
        /// Any bucket/prefix/endpoint/region written out parses back to itself; the prefix is empty or ends in `/`.
        #[test]
        fn round_trips(bucket in "[a-z0-9][a-z0-9.-]{2,20}", prefix in "([a-z0-9]{1,5}/){0,3}", port in 1u16.., region in "[a-z0-9-]{1,12}") {
            let url = format!("s3://{bucket}/{prefix}?endpoint=http://127.0.0.1:{port}&region={region}");
            let StoreSpec::S3(s) = StoreSpec::parse(&url).unwrap() else { panic!() };
            prop_assert_eq!(s.bucket, bucket);
            prop_assert_eq!(s.prefix, prefix);
            prop_assert_eq!(s.endpoint, Some(format!("http://127.0.0.1:{port}")));
            prop_assert_eq!(s.region, region);
        }
    }
}
