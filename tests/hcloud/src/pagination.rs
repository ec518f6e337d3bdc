//! `page` / `per_page` and `meta.pagination`, as the API documents them: pages count from 1,
//! `per_page` defaults to 25 and is at most 50.
//!
//! Above 50, `per_page` is clamped to 50 (and `meta.pagination.per_page` says 50), which is how the
//! real API treats it as far as we know; below 1 or not a number is `invalid_input`.

use serde_json::{Value, json};

use crate::errors::ApiError;

pub const DEFAULT_PER_PAGE: usize = 25;
pub const MAX_PER_PAGE: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: usize,
    pub per_page: usize,
}

impl Page {
    /// From the query pairs; the last occurrence of a parameter wins.
    pub fn from_query(query: &[(String, String)]) -> Result<Page, ApiError> {
        let page = positive(query, "page")?.unwrap_or(1);
        let per_page = positive(query, "per_page")?
            .unwrap_or(DEFAULT_PER_PAGE)
            .min(MAX_PER_PAGE);
        Ok(Page { page, per_page })
    }

    /// The slice of `items` on this page, and `meta` for the response.
    pub fn apply<T: Clone>(&self, items: &[T]) -> (Vec<T>, Value) {
        let total = items.len();
        let last_page = total.div_ceil(self.per_page).max(1);
        let start = (self.page - 1).saturating_mul(self.per_page);
        let chosen = items
            .iter()
            .skip(start)
            .take(self.per_page)
            .cloned()
            .collect();
        let meta = json!({
            "pagination": {
                "page": self.page,
                "per_page": self.per_page,
                "previous_page": (self.page > 1).then(|| self.page - 1),
                "next_page": (self.page < last_page).then(|| self.page + 1),
                "last_page": last_page,
                "total_entries": total,
            }
        });
        (chosen, meta)
    }
}

fn positive(query: &[(String, String)], name: &str) -> Result<Option<usize>, ApiError> {
    let Some((_, raw)) = query.iter().rev().find(|(k, _)| k == name) else {
        return Ok(None);
    };
    match raw.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(ApiError::field(name, "must be an integer of at least 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_and_clamp() {
        assert_eq!(
            Page::from_query(&[]).ok(),
            Some(Page {
                page: 1,
                per_page: 25
            })
        );
        assert_eq!(
            Page::from_query(&q(&[("per_page", "500")])).ok(),
            Some(Page {
                page: 1,
                per_page: 50
            })
        );
        assert!(Page::from_query(&q(&[("page", "0")])).is_err());
        assert!(Page::from_query(&q(&[("per_page", "x")])).is_err());
    }

    #[test]
    fn last_page_has_no_next() {
        let items: Vec<u32> = (0..120).collect();
        let page = Page {
            page: 3,
            per_page: 50,
        };
        let (chosen, meta) = page.apply(&items);
        assert_eq!(chosen.len(), 20);
        assert_eq!(meta["pagination"]["next_page"], Value::Null);
        assert_eq!(meta["pagination"]["previous_page"], json!(2));
        assert_eq!(meta["pagination"]["last_page"], json!(3));
        assert_eq!(meta["pagination"]["total_entries"], json!(120));
    }

    #[test]
    fn empty_list_is_one_page() {
        let (chosen, meta) = Page {
            page: 1,
            per_page: 25,
        }
        .apply::<u8>(&[]);
        assert!(chosen.is_empty());
        assert_eq!(meta["pagination"]["last_page"], json!(1));
        assert_eq!(meta["pagination"]["next_page"], Value::Null);
    }
}
