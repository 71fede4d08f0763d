//! `http(s)://` references: passed to the node as they are. Prepare checks only that the
//! URL is script-safe (done when it is parsed); ironboot does not fetch it.

use super::{CheckFuture, ImageError, ImageRef, ImageSource};
use crate::node::{PreparedImage, SourceKind};

#[derive(Debug, Default)]
pub struct HttpSource;

impl ImageSource for HttpSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Http
    }

    fn accepts(&self, image: &ImageRef) -> bool {
        matches!(image, ImageRef::Http(_))
    }

    fn check<'a>(
        &'a self,
        field: &'a str,
        text: &'a str,
        image: &'a ImageRef,
        _now: i64,
    ) -> CheckFuture<'a> {
        Box::pin(async move {
            Ok(PreparedImage {
                reference: text.to_string(),
                source: SourceKind::Http,
                location: self.locate(field, image)?,
                checksum: None,
            })
        })
    }

    fn locate(&self, field: &str, image: &ImageRef) -> Result<String, ImageError> {
        match image {
            ImageRef::Http(url) => Ok(url.clone()),
            other => Err(ImageError::not_mine(field, other, "http(s)")),
        }
    }

    fn url(
        &self,
        _field: &str,
        location: &str,
        _expires: i64,
        out: &mut String,
    ) -> Result<bool, ImageError> {
        out.push_str(location);
        Ok(false)
    }
}
