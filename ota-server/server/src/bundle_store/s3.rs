//! Bundles in an S3-compatible object store (AWS S3, Garage, MinIO, Ceph...) through `object_store`.
//! A verified staged upload is streamed from its staging file in parts of [`PART`] bytes (multipart upload
//! above one part, at most [`PARTS_IN_FLIGHT`] parts in memory): S3 shows an object only once the upload
//! completes, so a failed put leaves nothing under the bundle's name (a failed multipart upload is aborted;
//! one a crash interrupted is the bucket's lifecycle rule's to remove).

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::http::Method;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::buffered::BufWriter;
use object_store::path::Path as Key;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::spec::S3Spec;
use super::{is_bundle_id, Blob, BlobError, BlobSource, BundleStore, RangeSource, Staged};

/// Bytes per multipart part (S3's minimum is 5 MiB).
pub const PART: usize = 16 << 20;
/// Parts uploading at once.
pub const PARTS_IN_FLIGHT: usize = 2;

/// Bundles in one bucket under one prefix.
#[derive(Debug, Clone)]
pub struct S3Store {
    s3: Arc<AmazonS3>,
    spec: S3Spec,
}

impl S3Store {
    /// Connects lazily (no request is made here); credentials missing from `spec` come from the environment.
    pub fn new(spec: &S3Spec) -> Result<S3Store, BlobError> {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&spec.bucket)
            .with_region(&spec.region);
        if let Some(endpoint) = &spec.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(id) = &spec.access_key_id {
            b = b.with_access_key_id(id);
        }
        if let Some(secret) = &spec.secret_access_key {
            b = b.with_secret_access_key(secret);
        }
        let s3 = b.build().map_err(|e| BlobError {
            store: spec.to_string(),
            what: "configuring",
            detail: e.to_string(),
            not_found: false,
        })?;
        Ok(S3Store {
            s3: Arc::new(s3),
            spec: spec.clone(),
        })
    }

    fn key(&self, id: &str) -> Key {
        Key::from(format!("{}{id}", self.spec.prefix))
    }

    fn error(&self, what: &'static str, e: object_store::Error) -> BlobError {
        BlobError {
            store: self.spec.to_string(),
            what,
            not_found: matches!(e, object_store::Error::NotFound { .. }),
            detail: e.to_string(),
        }
    }

    async fn exists_now(&self, id: &str) -> Result<bool, BlobError> {
        match self.s3.head(&self.key(id)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error("looking up a bundle", e)),
        }
    }

    async fn put_now(&self, id: &str, mut staged: Staged) -> Result<bool, BlobError> {
        if self.exists_now(id).await? {
            return Ok(false);
        }
        let io_error = |what, e: io::Error| BlobError {
            store: self.spec.to_string(),
            what,
            detail: e.to_string(),
            not_found: false,
        };
        // The staging file's own handle (it has no name of its own until committed), read from the start.
        let mut file = staged
            .file
            .file()
            .try_clone()
            .map(tokio::fs::File::from_std)
            .map_err(|e| io_error("reading the staged upload", e))?;
        file.rewind()
            .await
            .map_err(|e| io_error("reading the staged upload", e))?;
        let store: Arc<dyn ObjectStore> = self.s3.clone();
        let mut out = BufWriter::with_capacity(store, self.key(id), PART)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        let copied = async {
            tokio::io::copy(&mut file, &mut out).await?;
            out.shutdown().await
        }
        .await;
        if let Err(e) = copied {
            let _ = out.abort().await;
            return Err(io_error("uploading the bundle", e));
        }
        // `staged` drops here: the staging file is removed.
        Ok(true)
    }
}

/// Ranges of one object, each a streamed GET.
struct ObjectRanges {
    s3: Arc<AmazonS3>,
    key: Key,
}

impl RangeSource for ObjectRanges {
    fn stream(&self, first: u64, end: u64) -> BoxStream<'static, io::Result<Bytes>> {
        let (s3, key) = (self.s3.clone(), self.key.clone());
        stream::once(async move {
            let options = GetOptions {
                range: Some(GetRange::Bounded(first..end)),
                ..GetOptions::default()
            };
            s3.get_opts(&key, options).await.map(|r| r.into_stream())
        })
        .try_flatten()
        .map_err(io::Error::other)
        .boxed()
    }
}

impl BundleStore for S3Store {
    fn put(&self, id: &str, staged: Staged) -> BoxFuture<'_, Result<bool, BlobError>> {
        let id = id.to_string();
        async move { self.put_now(&id, staged).await }.boxed()
    }

    fn open(&self, id: &str) -> BoxFuture<'_, Result<Blob, BlobError>> {
        let key = self.key(id);
        async move {
            let meta = self
                .s3
                .head(&key)
                .await
                .map_err(|e| self.error("opening a bundle", e))?;
            Ok(Blob {
                len: meta.size,
                source: BlobSource::Remote(Arc::new(ObjectRanges {
                    s3: self.s3.clone(),
                    key,
                })),
            })
        }
        .boxed()
    }

    fn delete(&self, id: &str) -> BoxFuture<'_, Result<(), BlobError>> {
        let key = self.key(id);
        async move {
            match self.s3.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.error("deleting a bundle", e)),
            }
        }
        .boxed()
    }

    fn exists(&self, id: &str) -> BoxFuture<'_, Result<bool, BlobError>> {
        let id = id.to_string();
        async move { self.exists_now(&id).await }.boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<(String, SystemTime)>, BlobError>> {
        async move {
            let prefix =
                (!self.spec.prefix.is_empty()).then(|| Key::from(self.spec.prefix.as_str()));
            let metas: Vec<_> = self
                .s3
                .list(prefix.as_ref())
                .try_collect()
                .await
                .map_err(|e| self.error("listing", e))?;
            Ok(metas
                .into_iter()
                .filter_map(|m| {
                    let name = m.location.filename()?.to_string();
                    is_bundle_id(&name).then(|| (name, SystemTime::from(m.last_modified)))
                })
                .collect())
        }
        .boxed()
    }

    fn presign(&self, id: &str, ttl: Duration) -> BoxFuture<'_, Result<Option<String>, BlobError>> {
        let key = self.key(id);
        async move {
            let url = self
                .s3
                .signed_url(Method::GET, &key, ttl)
                .await
                .map_err(|e| self.error("presigning a download", e))?;
            Ok(Some(url.to_string()))
        }
        .boxed()
    }
}
