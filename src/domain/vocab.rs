//! The vocabularies of the video world: the validator's default genres,
//! regions and resolutions (and the synthetic generators' world).

/// Video genres.
pub const GENRES: [&str; 8] = [
    "Action",
    "Comedy",
    "Drama",
    "Sci-Fi",
    "Documentary",
    "Horror",
    "Romance",
    "Animation",
];
/// Viewer regions.
pub const REGIONS: [&str; 8] = ["US", "BR", "IN", "DE", "MX", "JP", "GB", "FR"];
/// Resolutions, lowest first.
pub const RESOLUTIONS: [&str; 6] = ["240p", "360p", "480p", "720p", "1080p", "4K"];
