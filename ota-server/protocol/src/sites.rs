//! Sites for the map: a site is a floor plan image an operator uploads with its scale and origin; robots on it
//! report `telemetry.position` with `frame` set to the site's name and `x`, `y` in metres (x to the right, y up
//! the plan, from the origin). The server places them on the plan in pixels (`GET /api/sites/{name}/robots`).

use serde::{Deserialize, Serialize};

use crate::device::ReportStatus;

/// Largest plan image accepted, in bytes.
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// Longest site name (it is the `frame` of the robots' positions, which has the same bound).
pub const MAX_SITE_NAME: usize = crate::validate::MAX_METRIC_NAME;

/// A plan image's format, from its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
}

impl ImageFormat {
    /// Its media type.
    pub fn media_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
        }
    }

    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
        }
    }
}

/// A site as listed by `GET /api/sites` (without its image: `GET /api/sites/{name}/image`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SiteInfo {
    /// Name; robots on the site report it as their position's `frame`.
    pub name: String,
    /// Plan width in pixels.
    pub width: u32,
    /// Plan height in pixels.
    pub height: u32,
    /// Metres per pixel.
    pub scale: f64,
    /// Pixel column of the point (0 m, 0 m).
    pub origin_x: f64,
    /// Pixel row of the point (0 m, 0 m).
    pub origin_y: f64,
    /// Image format.
    pub format: ImageFormat,
    /// Image size in bytes.
    pub bytes: u64,
    /// SHA-256 of the image (hex): changes whenever the plan does.
    pub digest: String,
    /// Upload time (Unix seconds).
    pub uploaded_at: u64,
}

/// A robot drawn on a site's plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlacedRobot {
    /// Device id.
    pub device_id: String,
    /// Pixel column on the plan (clamped to it).
    pub x: f64,
    /// Pixel row on the plan (clamped to it).
    pub y: f64,
    /// Its position lies off the plan: drawn at the nearest edge.
    pub outside: bool,
    /// Its latest report's status (what the fleet table colours by).
    pub status: Option<ReportStatus>,
    /// Running version.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub version: Option<semver::Version>,
    /// Its last poll or report (Unix seconds).
    pub last_seen: Option<u64>,
}

/// `GET /api/sites/{name}/robots`: the robots whose last position is on the site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SiteRobots {
    /// The site.
    pub site: SiteInfo,
    /// Its robots, by id.
    pub robots: Vec<PlacedRobot>,
}
