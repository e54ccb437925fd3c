//! Where the install meets the range engine: opening a bundle by ranges (a file, or a server that answers
//! ranges) and authenticating its head, then writing each planned image through [`super::write_image`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ota_bundle_format::head::{parse_head, HeadParse, VerifiedHead, FIRST_FETCH};
use ota_bundle_format::Manifest;
use ota_client_core::resume;
use ota_client_core::{PlannedWrite, Slot};

use super::{fetch, journal, Host, ImageJob, ImageStats, JOURNAL_EVERY};
use crate::client::{Client, ClientError, Progress, Session};
use crate::slotio::{self, SlotWriter};
use crate::source::ranges::{FileRanges, HttpRanges, RangeSource};
use crate::source::{BundleSource, SourceError};

/// A bundle read by ranges, its head authenticated.
pub struct Ranged {
    source: Box<dyn RangeSource>,
    origin: String,
    /// The verified head: manifest, bundle id, layout.
    pub head: VerifiedHead,
}

impl Ranged {
    /// Bytes received from the network so far (0 for files).
    pub fn wire_bytes(&self) -> u64 {
        self.source.wire_bytes()
    }
}

/// Opens a bundle file by ranges: `None` when it holds an image that is not chunked, or its head is refused
/// (then it is streamed as always, and the stream reader says why it refuses it).
pub fn open_file(path: &Path, client: &Client) -> Result<Option<Ranged>, ClientError> {
    let source = Box::new(FileRanges::open(path)?);
    match open_head(source, path.display().to_string(), client) {
        Err(ClientError::Bundle(_)) => Ok(None),
        other => other,
    }
}

/// Switches a download to ranges once its streamed head (`manifest`, bundle `id`) showed a chunked bundle: a URL
/// is streamed first, so a `full` bundle is fetched exactly as always. `None`: stay on the stream (a `full`
/// bundle, or a server that does not answer ranges).
pub fn switch_to_ranges(
    source: &BundleSource,
    client: &Client,
    cancel: Option<Arc<AtomicBool>>,
    manifest: &Manifest,
    id: &str,
) -> Result<Option<Ranged>, ClientError> {
    if !all_chunked(manifest) {
        return Ok(None);
    }
    let http = &client.config.http;
    let (url, headers) = match source {
        BundleSource::File(_) => return Ok(None),
        BundleSource::Url(url) => (url.as_str(), &[][..]),
        BundleSource::Http(r) => (r.url.as_str(), r.headers.as_slice()),
    };
    let Some(ranges) = HttpRanges::open(url, headers, http, cancel)? else {
        return Ok(None);
    };
    let Some(ranged) = open_head(Box::new(ranges), url.to_string(), client)? else {
        return Ok(None);
    };
    if ranged.head.bundle_id != id {
        return Err(SourceError::CannotResume {
            url: url.to_string(),
            detail: "the bundle changed on the server between two requests".into(),
        }
        .into());
    }
    Ok(Some(ranged))
}

/// Opens a URL by ranges from the first request when the request asks for it (the daemon, whose fleet server
/// answers ranges) or the download journal says an interrupted write of a chunked bundle from this very URL can
/// be continued (otherwise a bundle of unknown kind is streamed first, see [`switch_to_ranges`]). `None`: none of
/// these, the server does not answer ranges, or the bundle is not chunked after all.
pub fn open_url_by_ranges(
    source: &BundleSource,
    client: &Client,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<Option<Ranged>, ClientError> {
    let (url, headers, first) = match source {
        BundleSource::File(_) => return Ok(None),
        BundleSource::Url(url) => (url.as_str(), &[][..], false),
        BundleSource::Http(r) => (r.url.as_str(), r.headers.as_slice(), r.ranges_first),
    };
    let journal = journal::load(&client.journal_path());
    if !first && !resume::resumes_from(journal.as_ref(), url) {
        return Ok(None);
    }
    let Some(ranges) = HttpRanges::open(url, headers, &client.config.http, cancel)? else {
        return Ok(None);
    };
    match open_head(Box::new(ranges), url.to_string(), client) {
        Err(ClientError::Bundle(_)) => Ok(None),
        other => other,
    }
}

fn all_chunked(manifest: &Manifest) -> bool {
    manifest.images.iter().all(|i| i.chunked().is_some())
}

/// Fetches and authenticates the head of a bundle read by ranges, against the robot's root walked through the
/// chain the head carries ([`Client::bundle_trust`]). `None`: the bundle has an image that is not chunked, so the
/// caller streams it as before.
fn open_head(
    mut source: Box<dyn RangeSource>,
    origin: String,
    client: &Client,
) -> Result<Option<Ranged>, ClientError> {
    let total = source.len();
    let mut want = FIRST_FETCH.min(total);
    let head = loop {
        let bytes = fetch::fetch(source.as_mut(), &origin, &[fetch_span(want)])?.remove(0);
        match parse_head(&bytes)? {
            HeadParse::Complete(head) => break head,
            HeadParse::NeedMore(n) if n > want && n <= total => want = n,
            HeadParse::NeedMore(_) => {
                return Err(ota_bundle_format::BundleError::Truncated {
                    offset: total,
                    inside: "the bundle's head".into(),
                }
                .into())
            }
        }
    };
    let trust = client.bundle_trust(head.trust_chain())?;
    let head = head.verify(&trust)?;
    if !all_chunked(&head.manifest) {
        return Ok(None);
    }
    Ok(Some(Ranged {
        source,
        origin,
        head,
    }))
}

fn fetch_span(len: u64) -> ota_bundle_format::chunked::Span {
    ota_bundle_format::chunked::Span { offset: 0, len }
}

/// The client's side of an image write: the slot writer (wrapped by the test hooks), checkpoints, slot errors.
struct ClientHost<'a> {
    client: &'a mut Client,
    class: String,
    slot: Slot,
    path: PathBuf,
}

impl Host for ClientHost<'_> {
    fn open_writer(&mut self, offset: u64) -> Result<Box<dyn SlotWriter>, ClientError> {
        let mut writer = slotio::open_slot_at(&self.path, offset)
            .map_err(|e| self.slot_error(format!("cannot open for writing: {e}")))?;
        if let Some(wrap) = &self.client.hooks.wrap_writer {
            writer = wrap(writer);
        }
        Ok(writer)
    }

    fn checkpoint(&mut self, name: &str) -> Result<(), ClientError> {
        self.client.checkpoint(name)
    }

    fn slot_error(&self, detail: String) -> ClientError {
        ClientError::Slot {
            class: self.class.clone(),
            slot: self.slot,
            path: self.path.display().to_string(),
            detail,
        }
    }
}

impl Client {
    /// The download journal of this robot.
    pub(in crate::client) fn journal_path(&self) -> PathBuf {
        journal::journal_path(self.data.path())
    }

    /// Writes one planned image of a bundle read by ranges.
    pub(in crate::client) fn write_ranged(
        &mut self,
        s: &Session,
        w: &PlannedWrite,
        ranged: &mut Ranged,
        progress: &mut dyn Progress,
    ) -> Result<ImageStats, ClientError> {
        let manifest = &ranged.head.manifest;
        let image = &manifest.images[w.index];
        let spans = ranged
            .head
            .layout
            .image(manifest, &image.name)
            .expect("the layout holds every image of its manifest");
        let class = &self.config.slots[&w.class];
        let standby = class.path(w.slot).to_path_buf();
        let active_slot = w.slot.other();
        let active_path = class.path(active_slot).to_path_buf();
        let active_len = slotio::capacity(&active_path, class.size).ok();
        let base = image.chunked().and_then(|c| c.base.as_ref());
        let on_base = base.is_some_and(|b| {
            s.state.classes.get(&w.class).is_some_and(|c| {
                let record = c.get(active_slot);
                record.state.verified() && record.bundle_hash.as_deref() == Some(&b.bundle)
            })
        });
        let journal = self.journal_path();
        let bundle_id = ranged.head.bundle_id.clone();
        let job = ImageJob {
            bundle_id: &bundle_id,
            image,
            spans: &spans,
            class: &w.class,
            slot: w.slot,
            standby: &standby,
            active: active_len.map(|len| (active_path.as_path(), len)),
            on_base,
            origin: &ranged.origin,
            journal: &journal,
            journal_every: JOURNAL_EVERY,
        };
        let mut host = ClientHost {
            client: self,
            class: w.class.clone(),
            slot: w.slot,
            path: standby.clone(),
        };
        super::write_image(&job, ranged.source.as_mut(), &mut host, progress)
    }
}
