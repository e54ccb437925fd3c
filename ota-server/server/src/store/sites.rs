//! What the store keeps for the map: sites, each a plan image with its scale and origin. The image (at most
//! 10 MiB) lives in the database beside its row, not in the bundle store: a site is written and deleted in one
//! transaction, every replica sharing a PostgreSQL database serves the same plans, a database backup holds
//! them, and the bundle store stays bundles only (nothing there for its pruning to mistake). Every
//! [`super::Store`] is a [`SiteStore`]; each backend implements it in its `sites.rs`.

use ota_protocol::sites::{ImageFormat, SiteInfo};

use crate::error::StoreError;

/// The site table's columns but the image, in the order the backends read them.
pub const COLUMNS: &str =
    "name, width, height, scale, origin_x, origin_y, format, bytes, digest, uploaded_at";

/// Site plans.
pub trait SiteStore {
    /// Stores a site with its plan image, replacing one of the same name. Returns whether it replaced one.
    fn put_site(&self, site: &SiteInfo, image: &[u8]) -> Result<bool, StoreError>;
    /// Every site, by name (without images).
    fn sites(&self) -> Result<Vec<SiteInfo>, StoreError>;
    /// One site (without its image).
    fn site(&self, name: &str) -> Result<Option<SiteInfo>, StoreError>;
    /// One site's plan image.
    fn site_image(&self, name: &str) -> Result<Option<(SiteInfo, Vec<u8>)>, StoreError>;
    /// Deletes a site. Returns whether it existed.
    fn delete_site(&self, name: &str) -> Result<bool, StoreError>;
}

/// Decodes the stored format name.
pub fn format(text: &str) -> Result<ImageFormat, StoreError> {
    match text {
        "png" => Ok(ImageFormat::Png),
        "jpeg" => Ok(ImageFormat::Jpeg),
        other => Err(StoreError::Corrupt {
            what: "sites.format",
            detail: format!("unknown image format {other:?}"),
        }),
    }
}

#[cfg(test)]
pub(crate) mod conformance {
    //! The sites' checks of the conformance suite (`store::conformance::suite!` runs them on every backend).

    use super::*;
    use crate::store::conformance::Target;

    fn site(name: &str, bytes: u64) -> SiteInfo {
        SiteInfo {
            name: name.into(),
            width: 640,
            height: 480,
            scale: 0.05,
            origin_x: 12.5,
            origin_y: -3.0,
            format: ImageFormat::Png,
            bytes,
            digest: format!("d-{name}-{bytes}"),
            uploaded_at: 99,
        }
    }

    /// Sites round trip with their images, are replaced by name, listed without images and deleted; the
    /// history's metric names read back too.
    pub fn sites_round_trip_and_are_replaced(t: &Target) {
        let s = (t.open)();
        assert!(s.sites().unwrap().is_empty());
        assert!(s.site("hall-a").unwrap().is_none());
        let image: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        assert!(!s.put_site(&site("hall-a", 70_000), &image).unwrap());
        assert!(!s.put_site(&site("dock", 3), b"\x89PN").unwrap());
        let names: Vec<String> = s.sites().unwrap().into_iter().map(|x| x.name).collect();
        assert_eq!(names, ["dock", "hall-a"]);
        assert_eq!(s.site("hall-a").unwrap(), Some(site("hall-a", 70_000)));
        let (info, bytes) = s.site_image("hall-a").unwrap().unwrap();
        assert_eq!((info, bytes), (site("hall-a", 70_000), image));
        // Replaced by name, kept across a reopen.
        let mut jpeg = site("hall-a", 4);
        jpeg.format = ImageFormat::Jpeg;
        assert!(s.put_site(&jpeg, b"\xff\xd8\xff\xd9").unwrap());
        drop(s);
        let s = (t.open)();
        assert_eq!(
            s.site_image("hall-a").unwrap(),
            Some((jpeg, b"\xff\xd8\xff\xd9".to_vec()))
        );
        assert!(s.delete_site("hall-a").unwrap());
        assert!(!s.delete_site("hall-a").unwrap());
        assert!(s.site_image("hall-a").unwrap().is_none());
        assert_eq!(s.sites().unwrap().len(), 1);
    }

    /// The metrics a device has history of, from its stored buckets in the span.
    pub fn history_metric_names_read_back(t: &Target) {
        use crate::history::{Bucket, Row};
        let s = (t.open)();
        let row = |device: &str, metric: &str, at: u64| Row {
            device_id: device.into(),
            metric: metric.into(),
            bucket: Bucket::sample(at, 1.0),
        };
        s.save_history(&[
            row("r1", "latency", 600),
            row("r1", "battery_percent", 6000),
            row("r1", "latency", 6000),
            row("r2", "cpu_percent", 6000),
        ])
        .unwrap();
        assert_eq!(
            s.history_metrics("r1", 0).unwrap(),
            ["battery_percent", "latency"]
        );
        assert_eq!(s.history_metrics("r1", 5000).unwrap().len(), 2);
        assert_eq!(s.history_metrics("r1", 6060).unwrap().len(), 0);
        assert!(s.history_metrics("nobody", 0).unwrap().is_empty());
    }
}
