//! Sites for the map: an upload is checked by [`crate::sites`] (name, scale, origin, the image's magic bytes and
//! header dimensions) and stored with its image in the database ([`crate::store::sites`]); the robots on a
//! site are placed on its plan from the fleet in memory, so a map refresh costs no query but the site's row.

use std::sync::Arc;

use ota_protocol::sites::{SiteInfo, SiteRobots, MAX_IMAGE_BYTES};
use sha2::{Digest, Sha256};

use crate::error::ServiceError;
use crate::fleet::{lock, read, unix_now, Shared};
use crate::sites::{self, Geometry};

/// What an upload says besides its image.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteUpload {
    /// Site name (the robots' position frame).
    pub name: String,
    /// Metres per pixel.
    pub scale: f64,
    /// Pixel column of (0, 0).
    pub origin_x: f64,
    /// Pixel row of (0, 0).
    pub origin_y: f64,
}

/// Site plans.
#[derive(Clone)]
pub struct SiteService(pub(crate) Arc<Shared>);

fn unknown(name: &str) -> ServiceError {
    ServiceError::NotFound(format!(
        "no site '{name}'; GET /api/sites lists them, POST /api/sites adds one"
    ))
}

impl SiteService {
    /// Checks and stores a site with its plan image (replacing one of the same name). Returns whether it is
    /// new, and the site.
    pub async fn put(
        &self,
        upload: SiteUpload,
        image: Vec<u8>,
    ) -> Result<(bool, SiteInfo), ServiceError> {
        sites::check_name(&upload.name).map_err(ServiceError::Invalid)?;
        sites::check_geometry(upload.scale, upload.origin_x, upload.origin_y)
            .map_err(ServiceError::Invalid)?;
        if image.len() > MAX_IMAGE_BYTES {
            return Err(too_large());
        }
        let plan = sites::recognise(&image).map_err(ServiceError::Invalid)?;
        let site = SiteInfo {
            name: upload.name,
            width: plan.width,
            height: plan.height,
            scale: upload.scale,
            origin_x: upload.origin_x,
            origin_y: upload.origin_y,
            format: plan.format,
            bytes: image.len() as u64,
            digest: hex::encode(Sha256::digest(&image)),
            uploaded_at: unix_now(),
        };
        let stored = site.clone();
        let replaced = self
            .0
            .blocking(move |s| s.put_site(&stored, &image))
            .await?;
        Ok((!replaced, site))
    }

    /// Every site, by name.
    pub async fn list(&self) -> Result<Vec<SiteInfo>, ServiceError> {
        self.0.blocking(|s| s.sites()).await
    }

    /// A site's plan image.
    pub async fn image(&self, name: &str) -> Result<(SiteInfo, Vec<u8>), ServiceError> {
        let key = name.to_string();
        self.0
            .blocking(move |s| s.site_image(&key))
            .await?
            .ok_or_else(|| unknown(name))
    }

    /// Deletes a site.
    pub async fn delete(&self, name: &str) -> Result<(), ServiceError> {
        let key = name.to_string();
        if self.0.blocking(move |s| s.delete_site(&key)).await? {
            Ok(())
        } else {
            Err(unknown(name))
        }
    }

    /// The robots whose last position is on the site, placed on its plan, by id.
    pub async fn robots(&self, name: &str) -> Result<SiteRobots, ServiceError> {
        let key = name.to_string();
        let site = self
            .0
            .blocking(move |s| s.site(&key))
            .await?
            .ok_or_else(|| unknown(name))?;
        let g = Geometry::of(&site);
        let mut robots: Vec<_> = read(&self.0.fleet)
            .devices
            .values()
            .filter_map(|d| sites::placed(&g, &site.name, &lock(d).record))
            .collect();
        robots.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(SiteRobots { site, robots })
    }
}

/// The refusal of an image over [`MAX_IMAGE_BYTES`].
pub fn too_large() -> ServiceError {
    ServiceError::TooLarge(format!(
        "the plan image is larger than {} MiB; scale it down or save it as a JPEG",
        MAX_IMAGE_BYTES / (1024 * 1024)
    ))
}
