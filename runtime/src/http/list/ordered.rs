//! Lists read in an order the state keeps: in the default order (`created_at`), by `id`,
//! or by one `indexed` or `unique` field, without filters or with filters on that field
//! only, a page is read from the model's ordered index (or from the records, which are
//! kept by id) instead of sorting every row: the filters select one range of the index
//! (`filter::bounds`). Ties are broken by `id` ascending, as the full sort in `mod.rs`
//! breaks them.

use std::ops::Bound;

use uuid::Uuid;

use super::filter::{self, Probe};
use super::{ListQuery, View};
use crate::domain::state::{Entries, ModelState, SortKey};

/// An order a list can read directly, page by page.
pub(super) struct InOrder {
    by: By,
    desc: bool,
    /// The entries of the index the filters select (everything without filters).
    range: (Bound<Probe>, Bound<Probe>),
}

/// What keeps the order.
enum By {
    /// An ordered index: (value, id).
    Index(Entries),
    /// The records themselves, which are kept by id.
    Id,
}

impl ListQuery {
    /// The order to read a page in directly: a list sorted by nothing (the default,
    /// `created_at`), by `id`, or by one field with an ordered index (an indexed or
    /// unique field), without filters or with filters on that field alone that the
    /// index can select (not `ne`). Ties are broken by `id` ascending, as the full sort
    /// breaks them.
    pub(super) fn in_order(&self, ms: &ModelState) -> Option<InOrder> {
        if self.sort.len() > 1 {
            return None;
        }
        let (field, desc) = match self.sort.first() {
            Some((f, desc)) => (f.as_str(), *desc),
            None => ("created_at", false),
        };
        if !self
            .filters
            .iter()
            .all(|f| f.field == field && f.uses_index())
        {
            return None;
        }
        let by = match field {
            "id" if self.filters.is_empty() => By::Id,
            "id" => return None,
            f => By::Index(ms.index(f)?.entries.clone()),
        };
        let range = match self.filters.is_empty() {
            true => (Bound::Unbounded, Bound::Unbounded),
            false => filter::bounds(&self.filters),
        };
        Some(InOrder { by, desc, range })
    }

    /// The ids of the page, read from an order, and how many records the list selects.
    pub(super) fn page_in_order(&self, view: &View, order: &InOrder) -> (Vec<Uuid>, usize) {
        let (skip, take) = (self.offset, self.limit);
        // Positions are found in O(log n): an offset costs nothing to skip.
        match (&order.by, order.desc) {
            (By::Id, false) => {
                let end = skip.saturating_add(take);
                let ids = view.records.iter_at(skip, end).map(|(id, _)| *id);
                (ids.collect(), view.records.len())
            }
            (By::Id, true) => {
                let len = view.records.len();
                let end = skip.saturating_add(take);
                let (from, to) = (len.saturating_sub(end), len.saturating_sub(skip));
                let ids = view.records.iter_at(from, to).rev().map(|(id, _)| *id);
                (ids.collect(), len)
            }
            (By::Index(set), false) => {
                let (from, to) = set.positions(order.range.clone());
                let start = from.saturating_add(skip).min(to);
                let end = start.saturating_add(take).min(to);
                let ids = set.iter_at(start, end).map(|((_, id), _)| *id);
                (ids.collect(), to - from)
            }
            (By::Index(set), true) => {
                let (from, to) = set.positions(order.range.clone());
                (descending(set, &order.range, skip, take), to - from)
            }
        }
    }
}

/// The ids of a page of `set`'s entries in `range`, read from its end: values
/// descending, and within one value ids ascending (as the full sort breaks ties). The
/// entries of one value are gathered while there are few of them; a value that many
/// records share is read forward as a range instead, so it costs only the ids the page
/// takes.
fn descending(
    set: &Entries,
    range: &(Bound<Probe>, Bound<Probe>),
    skip: usize,
    take: usize,
) -> Vec<Uuid> {
    /// Most entries of one value gathered before it is read as a range.
    const GATHER: usize = 64;
    let (lowest, highest) = (Uuid::nil(), Uuid::from_u128(u128::MAX));
    let mut page = Page {
        skip,
        take,
        out: Vec::with_capacity(take),
    };
    // Entries below this bound are still to be read.
    let mut below: Option<(SortKey, Uuid)> = None;
    while !page.full() {
        let entries = match &below {
            None => set.range(range.clone()).rev(),
            Some(b) => set
                .range((range.0.clone(), Bound::Excluded(b.clone())))
                .rev(),
        };
        let mut run: Vec<Uuid> = Vec::new();
        let mut run_key: Option<&SortKey> = None;
        let mut crowded = None;
        for ((key, id), _) in entries {
            if run_key != Some(key) {
                page.push_all(run.drain(..).rev());
                if page.full() {
                    return page.out;
                }
                run_key = Some(key);
            }
            run.push(*id);
            if run.len() > GATHER {
                crowded = Some(key.clone());
                break;
            }
        }
        match crowded {
            None => {
                page.push_all(run.drain(..).rev());
                break;
            }
            Some(key) => {
                let from = (key.clone(), lowest);
                page.push_all(
                    set.range(from.clone()..=(key, highest))
                        .map(|((_, id), _)| *id),
                );
                below = Some(from);
            }
        }
    }
    page.out
}

/// A page being filled: what is still to skip, and how many it takes.
struct Page {
    skip: usize,
    take: usize,
    out: Vec<Uuid>,
}

impl Page {
    fn full(&self) -> bool {
        self.out.len() >= self.take
    }

    fn push_all(&mut self, ids: impl Iterator<Item = Uuid>) {
        for id in ids {
            if self.full() {
                return;
            }
            if self.skip > 0 {
                self.skip -= 1;
            } else {
                self.out.push(id);
            }
        }
    }
}
