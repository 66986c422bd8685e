//! A persistent ordered map: a B+ tree whose nodes are shared between copies, for the
//! state's records and ordered indexes.
//!
//! Cloning a map is O(1) (the root is shared); a change copies the nodes on its path
//! that another copy still shares, so a frozen copy (a list's view, a snapshot) never
//! sees later changes. Entries live only in the leaves, up to [`CAP`] per leaf, and a
//! branch knows each child's smallest key and entry count, so a lookup, an insert and a
//! removal are O(log n), and so is finding the entry at a position (a list's offset).
//! A map built from many entries at once ([`FromIterator`]: the load of a snapshot) fills
//! its nodes completely in O(n) after sorting, and an insert after the last entry keeps
//! the leaf it leaves full, so a map that grows at its end stays dense. Nodes that
//! removals leave small are not merged (an empty one is dropped).
//!
//! `imbl::OrdMap` served before; its nodes hold room for 64 keys and 65 children each,
//! whatever their use, which cost a million-record store more than half of its memory,
//! and it has no bulk load.

use std::cmp::Ordering;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// Entries per leaf, children per branch.
const CAP: usize = 64;

/// A persistent ordered map.
pub struct Tree<K, V> {
    root: Option<Node<K, V>>,
}

enum Node<K, V> {
    Leaf(Arc<Vec<(K, V)>>),
    Branch(Arc<Vec<Child<K, V>>>),
}

struct Child<K, V> {
    /// Not above the smallest key of the subtree, and below every key of the next child.
    first: K,
    /// Entries in the subtree.
    len: usize,
    node: Node<K, V>,
}

impl<K, V> Clone for Node<K, V> {
    fn clone(&self) -> Self {
        match self {
            Node::Leaf(l) => Node::Leaf(l.clone()),
            Node::Branch(b) => Node::Branch(b.clone()),
        }
    }
}

impl<K: Clone, V> Clone for Child<K, V> {
    fn clone(&self) -> Self {
        Child {
            first: self.first.clone(),
            len: self.len,
            node: self.node.clone(),
        }
    }
}

impl<K, V> Clone for Tree<K, V> {
    fn clone(&self) -> Self {
        Tree {
            root: self.root.clone(),
        }
    }
}

impl<K, V> Default for Tree<K, V> {
    fn default() -> Self {
        Tree { root: None }
    }
}

impl<K, V> Node<K, V> {
    fn len(&self) -> usize {
        match self {
            Node::Leaf(l) => l.len(),
            Node::Branch(b) => b.iter().map(|c| c.len).sum(),
        }
    }
}

/// The child of `children` whose subtree would hold `key`.
fn child_for<K: Ord, V>(children: &[Child<K, V>], key: &K) -> usize {
    children
        .partition_point(|c| c.first <= *key)
        .saturating_sub(1)
}

impl<K: Ord + Clone, V: Clone> Node<K, V> {
    fn first_key(&self) -> Option<&K> {
        match self {
            Node::Leaf(l) => l.first().map(|(k, _)| k),
            Node::Branch(b) => b.first().map(|c| &c.first),
        }
    }

    /// Inserts; answers the value replaced, and a new right sibling when the node split.
    fn insert(&mut self, key: K, value: V) -> (Option<V>, Option<Child<K, V>>) {
        match self {
            Node::Leaf(leaf) => {
                let leaf = Arc::make_mut(leaf);
                match leaf.binary_search_by(|(k, _)| k.cmp(&key)) {
                    Ok(i) => (Some(std::mem::replace(&mut leaf[i].1, value)), None),
                    Err(i) if leaf.len() < CAP => {
                        leaf.reserve_exact(CAP - leaf.len());
                        leaf.insert(i, (key, value));
                        (None, None)
                    }
                    Err(i) => {
                        // A full leaf: one that grows at its end stays full and the new
                        // entry starts the next one; others split in half. Every leaf
                        // has room for CAP entries, so inserts never move it.
                        let mut right: Vec<(K, V)> = Vec::with_capacity(CAP);
                        if i == leaf.len() {
                            right.push((key, value));
                        } else {
                            let keep = CAP / 2;
                            right.extend(leaf.drain(keep..));
                            if i <= keep {
                                leaf.insert(i, (key, value));
                            } else {
                                right.insert(i - keep, (key, value));
                            }
                        }
                        let first = right[0].0.clone();
                        let len = right.len();
                        (
                            None,
                            Some(Child {
                                first,
                                len,
                                node: Node::Leaf(Arc::new(right)),
                            }),
                        )
                    }
                }
            }
            Node::Branch(branch) => {
                let branch = Arc::make_mut(branch);
                let i = child_for(branch, &key);
                let child = &mut branch[i];
                if key < child.first {
                    child.first = key.clone();
                }
                let (old, split) = child.node.insert(key, value);
                if old.is_none() {
                    child.len += 1;
                }
                if let Some(right) = split {
                    child.len -= right.len;
                    let at_end = i + 1 == branch.len();
                    branch.insert(i + 1, right);
                    if branch.len() > CAP {
                        let keep = if at_end { CAP } else { branch.len() / 2 };
                        let mut rest: Vec<Child<K, V>> = Vec::with_capacity(CAP + 1);
                        rest.extend(branch.drain(keep..));
                        let first = rest[0].first.clone();
                        let len = rest.iter().map(|c| c.len).sum();
                        return (
                            old,
                            Some(Child {
                                first,
                                len,
                                node: Node::Branch(Arc::new(rest)),
                            }),
                        );
                    }
                }
                (old, None)
            }
        }
    }

    /// Removes `key`; answers its value.
    fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            Node::Leaf(leaf) => {
                let i = leaf.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
                Some(Arc::make_mut(leaf).remove(i).1)
            }
            Node::Branch(branch) => {
                let i = child_for(branch, key);
                // Look before copying a shared node for nothing (a node of this copy
                // alone is changed in place, found or not).
                if Arc::strong_count(branch) > 1 && !branch[i].node.contains(key) {
                    return None;
                }
                let branch = Arc::make_mut(branch);
                let old = branch[i].node.remove(key)?;
                branch[i].len -= 1;
                if branch[i].len == 0 {
                    branch.remove(i);
                }
                Some(old)
            }
        }
    }

    fn contains(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    fn get(&self, key: &K) -> Option<&V> {
        let mut node = self;
        loop {
            match node {
                Node::Leaf(leaf) => {
                    let i = leaf.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
                    return Some(&leaf[i].1);
                }
                Node::Branch(branch) => node = &branch[child_for(branch, key)].node,
            }
        }
    }

    /// How many entries are below `key` (or not above it, with `inclusive`).
    fn rank(&self, key: &K, inclusive: bool) -> usize {
        let mut node = self;
        let mut before = 0;
        loop {
            match node {
                Node::Leaf(leaf) => {
                    return before
                        + leaf.partition_point(|(k, _)| match k.cmp(key) {
                            Ordering::Less => true,
                            Ordering::Equal => inclusive,
                            Ordering::Greater => false,
                        });
                }
                Node::Branch(branch) => {
                    let i = child_for(branch, key);
                    before += branch[..i].iter().map(|c| c.len).sum::<usize>();
                    node = &branch[i].node;
                }
            }
        }
    }
}

impl<K: Ord + Clone, V: Clone> Tree<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Tree { root: None }
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.root.as_ref().map_or(0, Node::len)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.root.as_ref()?.get(key)
    }

    /// Inserts `key` with `value`; answers the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let Some(root) = self.root.as_mut() else {
            self.root = Some(Node::Leaf(Arc::new(vec![(key, value)])));
            return None;
        };
        let (old, split) = root.insert(key, value);
        if let Some(right) = split {
            let Some(left) = self.root.take() else {
                return old;
            };
            let first = left
                .first_key()
                .cloned()
                .unwrap_or_else(|| right.first.clone());
            let len = left.len();
            self.root = Some(Node::Branch(Arc::new(vec![
                Child {
                    first,
                    len,
                    node: left,
                },
                right,
            ])));
        }
        old
    }

    /// Removes `key`; answers its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let root = self.root.as_mut()?;
        let old = root.remove(key)?;
        // A root left with one child gives way to it; an empty one to nothing.
        loop {
            match &self.root {
                Some(Node::Branch(b)) if b.len() == 1 => {
                    self.root = Some(b[0].node.clone());
                }
                Some(Node::Branch(b)) if b.is_empty() => self.root = None,
                Some(Node::Leaf(l)) if l.is_empty() => self.root = None,
                _ => break,
            }
        }
        Some(old)
    }

    /// The entries in key order (either direction).
    pub fn iter(&self) -> Iter<'_, K, V> {
        self.iter_at(0, self.len())
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// The entries whose keys are in `range`, in key order (either direction).
    pub fn range(&self, range: impl RangeBounds<K>) -> Iter<'_, K, V> {
        let (from, to) = self.positions(range);
        self.iter_at(from, to)
    }

    /// The positions `from..to` (in key order) of the entries whose keys are in
    /// `range`, found in O(log n): how many entries are below it, and below its end.
    pub fn positions(&self, range: impl RangeBounds<K>) -> (usize, usize) {
        let Some(root) = self.root.as_ref().filter(|_| !self.is_empty()) else {
            return (0, 0);
        };
        let from = match range.start_bound() {
            Bound::Included(k) => root.rank(k, false),
            Bound::Excluded(k) => root.rank(k, true),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(k) => root.rank(k, true),
            Bound::Excluded(k) => root.rank(k, false),
            Bound::Unbounded => self.len(),
        };
        (from, to.max(from))
    }

    /// The entries at positions `from..to` (in key order), found in O(log n).
    pub fn iter_at(&self, from: usize, to: usize) -> Iter<'_, K, V> {
        let to = to.min(self.len());
        let from = from.min(to);
        Iter {
            front: Cursor::at(self.root.as_ref(), from),
            back: Cursor::at(self.root.as_ref(), to),
            left: to - from,
        }
    }
}

/// A position in a tree: the branches above, the leaf and an index in it.
struct Cursor<'a, K, V> {
    path: Vec<(&'a [Child<K, V>], usize)>,
    leaf: &'a [(K, V)],
    at: usize,
}

impl<'a, K, V> Cursor<'a, K, V> {
    /// The cursor before the entry at position `rank` (at the end for `len`).
    fn at(root: Option<&'a Node<K, V>>, mut rank: usize) -> Self {
        let mut path = Vec::new();
        let mut node = root;
        loop {
            match node {
                None => {
                    return Cursor {
                        path,
                        leaf: &[],
                        at: 0,
                    }
                }
                Some(Node::Leaf(leaf)) => {
                    return Cursor {
                        path,
                        leaf,
                        at: rank.min(leaf.len()),
                    }
                }
                Some(Node::Branch(branch)) => {
                    let mut i = 0;
                    while i + 1 < branch.len() && rank >= branch[i].len {
                        rank -= branch[i].len;
                        i += 1;
                    }
                    path.push((&branch[..], i));
                    node = branch.get(i).map(|c| &c.node);
                }
            }
        }
    }

    /// Descends to the first (or, with `last`, the end of the last) leaf of `node`.
    fn descend(&mut self, mut node: &'a Node<K, V>, last: bool) {
        loop {
            match node {
                Node::Leaf(leaf) => {
                    self.leaf = leaf;
                    self.at = if last { leaf.len() } else { 0 };
                    return;
                }
                Node::Branch(branch) => {
                    let i = if last {
                        branch.len().saturating_sub(1)
                    } else {
                        0
                    };
                    self.path.push((&branch[..], i));
                    match branch.get(i) {
                        Some(c) => node = &c.node,
                        None => return,
                    }
                }
            }
        }
    }

    fn next(&mut self) -> Option<&'a (K, V)> {
        while self.at >= self.leaf.len() {
            // On to the next leaf.
            loop {
                let (branch, i) = self.path.pop()?;
                if i + 1 < branch.len() {
                    self.path.push((branch, i + 1));
                    self.descend(&branch[i + 1].node, false);
                    break;
                }
            }
        }
        let item = &self.leaf[self.at];
        self.at += 1;
        Some(item)
    }

    fn prev(&mut self) -> Option<&'a (K, V)> {
        while self.at == 0 {
            loop {
                let (branch, i) = self.path.pop()?;
                if i > 0 {
                    self.path.push((branch, i - 1));
                    self.descend(&branch[i - 1].node, true);
                    break;
                }
            }
        }
        self.at -= 1;
        Some(&self.leaf[self.at])
    }
}

/// Entries of a tree, in key order from the front or the back.
pub struct Iter<'a, K, V> {
    front: Cursor<'a, K, V>,
    back: Cursor<'a, K, V>,
    left: usize,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.front.next().map(|(k, v)| (k, v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K, V> DoubleEndedIterator for Iter<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.back.prev().map(|(k, v)| (k, v))
    }
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}

impl<K: Ord + Clone, V: Clone> FromIterator<(K, V)> for Tree<K, V> {
    /// Builds a dense tree: sorted by key (stable: of equal keys the last one stays), then
    /// packed into full leaves and branches.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(items: I) -> Self {
        let mut unique: Vec<(K, V)> = items.into_iter().collect();
        unique.sort_by(|a, b| a.0.cmp(&b.0));
        // Of equal keys the last one stays (in place: `later` is dropped, its value kept).
        unique.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        if unique.is_empty() {
            return Tree::new();
        }
        let mut level: Vec<Child<K, V>> = Vec::with_capacity(unique.len() / CAP + 1);
        let mut rest = unique.into_iter().peekable();
        while rest.peek().is_some() {
            let leaf: Vec<(K, V)> = rest.by_ref().take(CAP).collect();
            level.push(Child {
                first: leaf[0].0.clone(),
                len: leaf.len(),
                node: Node::Leaf(Arc::new(leaf)),
            });
        }
        while level.len() > 1 {
            let mut up = Vec::with_capacity(level.len() / CAP + 1);
            let mut rest = level.into_iter().peekable();
            while rest.peek().is_some() {
                let children: Vec<Child<K, V>> = rest.by_ref().take(CAP).collect();
                up.push(Child {
                    first: children[0].first.clone(),
                    len: children.iter().map(|c| c.len).sum(),
                    node: Node::Branch(Arc::new(children)),
                });
            }
            level = up;
        }
        Tree {
            root: level.pop().map(|c| c.node),
        }
    }
}

impl<K: Ord + Clone + std::fmt::Debug, V: Clone + std::fmt::Debug> std::fmt::Debug for Tree<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> PartialEq for Tree<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    /// Checks a node's shape: sizes within bounds, counts right, keys ordered and above
    /// their child's `first`; answers (entries, smallest key, largest key).
    fn check<K: Ord + Clone + std::fmt::Debug, V>(
        node: &Node<K, V>,
    ) -> (usize, Option<K>, Option<K>) {
        match node {
            Node::Leaf(l) => {
                assert!(l.len() <= CAP, "a leaf of {}", l.len());
                assert!(l.windows(2).all(|w| w[0].0 < w[1].0));
                (
                    l.len(),
                    l.first().map(|e| e.0.clone()),
                    l.last().map(|e| e.0.clone()),
                )
            }
            Node::Branch(b) => {
                assert!(!b.is_empty() && b.len() <= CAP, "a branch of {}", b.len());
                let mut total = 0;
                let mut previous_max: Option<K> = None;
                let (mut lo, mut hi) = (None, None);
                for c in b.iter() {
                    let (n, min, max) = check(&c.node);
                    assert_eq!(n, c.len);
                    assert!(n > 0, "an empty child");
                    let min = min.unwrap();
                    assert!(c.first <= min);
                    if let Some(p) = &previous_max {
                        assert!(*p < c.first, "{p:?} !< {:?}", c.first);
                    }
                    lo = lo.or(Some(min));
                    previous_max = max.clone();
                    hi = max;
                    total += n;
                }
                (total, lo, hi)
            }
        }
    }

    /// Random inserts, replacements and removals, on the tree and on a `BTreeMap`, with
    /// frozen copies taken along the way: the tree always equals the map (length, lookups,
    /// order both ways, ranges of every bound kind, positions), and a copy never changes.
    #[test]
    fn a_tree_behaves_as_an_ordered_map_and_copies_stay_as_they_were() {
        for seed in 0..20u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let range = if seed % 2 == 0 { 300 } else { 20_000 };
            let mut tree: Tree<u32, u32> = Tree::new();
            let mut map: BTreeMap<u32, u32> = BTreeMap::new();
            let mut frozen: Vec<(Tree<u32, u32>, BTreeMap<u32, u32>)> = Vec::new();
            for step in 0..6000u32 {
                let k = if rng.gen_bool(0.3) {
                    // Growth at the end.
                    map.keys().next_back().map_or(0, |m| m + 1)
                } else {
                    rng.gen_range(0..range)
                };
                if rng.gen_bool(0.7) {
                    assert_eq!(tree.insert(k, step), map.insert(k, step));
                } else {
                    assert_eq!(tree.remove(&k), map.remove(&k));
                }
                if step % 997 == 0 {
                    frozen.push((tree.clone(), map.clone()));
                }
            }
            assert_eq!(tree.len(), map.len());
            if let Some(root) = &tree.root {
                assert_eq!(check(root).0, map.len());
            }
            assert!(tree.iter().eq(map.iter()));
            assert!(tree.iter().rev().eq(map.iter().rev()));
            for _ in 0..200 {
                let (a, b) = (rng.gen_range(0..range + 10), rng.gen_range(0..range + 10));
                let (lo, hi) = (a.min(b), a.max(b));
                assert!(tree.range(lo..hi).eq(map.range(lo..hi)));
                assert!(tree.range(lo..=hi).rev().eq(map.range(lo..=hi).rev()));
                assert!(tree.range(..hi).rev().eq(map.range(..hi).rev()));
                assert!(tree.range(lo..).eq(map.range(lo..)));
                assert_eq!(tree.get(&lo), map.get(&lo));
                let skip = rng.gen_range(0..map.len() + 2);
                assert!(tree
                    .iter_at(skip, skip + 20)
                    .eq(map.iter().skip(skip).take(20)));
                // Both ends of one iterator meet without overlap.
                let mut it = tree.range(lo..hi);
                let mut expected = map.range(lo..hi);
                while let Some(x) = if rng.gen_bool(0.5) {
                    it.next()
                } else {
                    it.next_back()
                } {
                    let _ = x;
                    let _ = expected.next();
                }
                assert!(expected.next().is_none());
            }
            for (t, m) in &frozen {
                assert_eq!(t.len(), m.len());
                assert!(t.iter().eq(m.iter()));
            }
        }
    }

    /// A tree built at once is dense and the same as one built by inserts; of equal keys
    /// the last value stays.
    #[test]
    fn a_tree_built_at_once_equals_one_built_by_inserts() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let items: Vec<(u32, u32)> = (0..10_000).map(|i| (rng.gen_range(0..5000), i)).collect();
        let built: Tree<u32, u32> = items.iter().copied().collect();
        let mut inserted = Tree::new();
        for (k, v) in &items {
            inserted.insert(*k, *v);
        }
        assert_eq!(built, inserted);
        let map: BTreeMap<u32, u32> = items.into_iter().collect();
        assert!(built.iter().eq(map.iter()));
        let leaves = match &built.root {
            Some(Node::Branch(b)) => b.len(),
            _ => 0,
        };
        assert!(leaves > 0);
    }
}
