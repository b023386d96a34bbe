//! Host → path routing. Built once per shard from the validated routes; lookups walk a
//! segment trie and never allocate. Route conflicts are found here and reported as config errors.

use std::collections::HashMap;

use crate::config::{HostMatch, PathMatch, Route};

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch {
    /// Route index and how many path segments the route's path covers (for `strip_prefix`).
    Found { route: usize, segments: usize },
    /// A path matched but no route there accepts the method; `route` is one that matched the path,
    /// `segments` as for `Found`.
    MethodNotAllowed { route: usize, segments: usize },
    NotFound,
}

#[derive(Default, Debug)]
struct Node {
    children: HashMap<Box<[u8]>, Node>,
    /// Routes whose prefix ends at this node, with their method sets.
    prefix: Vec<usize>,
    /// Routes matching exactly this path.
    exact: Vec<usize>,
    /// Number of segments from the root to this node.
    depth: usize,
}

#[derive(Default, Debug)]
struct PathTrie {
    root: Node,
}

/// The rest of `path` after its first `n` segments, for `strip_prefix`: always starts with '/'.
/// `/api/users/7` less 2 segments is `/7`; `/api/users` less 2 is `/`.
pub fn strip_segments(path: &[u8], n: usize) -> &[u8] {
    let mut i = 0;
    for _ in 0..n {
        while i < path.len() && path[i] == b'/' {
            i += 1;
        }
        while i < path.len() && path[i] != b'/' {
            i += 1;
        }
    }
    if i >= path.len() {
        b"/"
    } else {
        &path[i..]
    }
}

/// A route conflict, phrased for the config report.
pub struct Conflict {
    pub path: String,
    pub problem: String,
    pub fix: String,
}

#[derive(Debug)]
pub struct Router {
    /// Method sets by route index (empty = any).
    methods: Vec<Vec<String>>,
    exact_hosts: HashMap<Box<[u8]>, PathTrie>,
    /// `.example.com` suffixes, longest first so the most specific wildcard wins.
    suffix_hosts: Vec<(Box<[u8]>, PathTrie)>,
    any_host: PathTrie,
}

fn segments(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|s| !s.is_empty())
}

impl PathTrie {
    fn insert(&mut self, pm: &PathMatch, route: usize) {
        let (path, exact) = match pm {
            PathMatch::Prefix(p) => (p, false),
            PathMatch::Exact(p) => (p, true),
        };
        let mut node = &mut self.root;
        for (d, seg) in segments(path.as_bytes()).enumerate() {
            node = node.children.entry(seg.into()).or_default();
            node.depth = d + 1;
        }
        if exact {
            node.exact.push(route);
        } else {
            node.prefix.push(route);
        }
    }
}

impl Router {
    pub fn new(routes: &[Route]) -> Router {
        let mut r = Router {
            methods: routes.iter().map(|x| x.methods.clone()).collect(),
            exact_hosts: HashMap::new(),
            suffix_hosts: Vec::new(),
            any_host: PathTrie::default(),
        };
        for (i, route) in routes.iter().enumerate() {
            if route.hosts.is_empty() {
                for pm in &route.paths {
                    r.any_host.insert(pm, i);
                }
            }
            for h in &route.hosts {
                let trie = match h {
                    HostMatch::Exact(name) => r.exact_hosts.entry(name.as_bytes().into()).or_default(),
                    HostMatch::Suffix(sfx) => {
                        let pos = r.suffix_hosts.iter().position(|(s, _)| &**s == sfx.as_bytes());
                        let pos = match pos {
                            Some(p) => p,
                            None => {
                                r.suffix_hosts.push((sfx.as_bytes().into(), PathTrie::default()));
                                r.suffix_hosts.len() - 1
                            }
                        };
                        &mut r.suffix_hosts[pos].1
                    }
                };
                for pm in &route.paths {
                    trie.insert(pm, i);
                }
            }
        }
        r.suffix_hosts.sort_by_key(|(sfx, _)| std::cmp::Reverse(sfx.len()));
        r
    }

    /// Looks a request up. `host` is the Host without port, any case; `path` has no query.
    pub fn lookup(&self, host: &[u8], path: &[u8], method: &str) -> RouteMatch {
        let mut lower = [0u8; 256];
        let host = if host.len() <= lower.len() {
            let l = &mut lower[..host.len()];
            l.copy_from_slice(host);
            l.make_ascii_lowercase();
            &*l
        } else {
            &[][..]
        };
        let mut saw_path = None;
        if !host.is_empty() {
            if let Some(t) = self.exact_hosts.get(host) {
                match self.lookup_trie(t, path, method) {
                    RouteMatch::NotFound => {}
                    RouteMatch::MethodNotAllowed { route, segments } => saw_path = saw_path.or(Some((route, segments))),
                    found => return found,
                }
            }
            for (sfx, t) in &self.suffix_hosts {
                if host.len() > sfx.len() && host.ends_with(sfx) {
                    match self.lookup_trie(t, path, method) {
                        RouteMatch::NotFound => {}
                        RouteMatch::MethodNotAllowed { route, segments } => saw_path = saw_path.or(Some((route, segments))),
                        found => return found,
                    }
                }
            }
        }
        match self.lookup_trie(&self.any_host, path, method) {
            RouteMatch::NotFound => match saw_path {
                Some((route, segments)) => RouteMatch::MethodNotAllowed { route, segments },
                None => RouteMatch::NotFound,
            },
            other => other,
        }
    }

    fn pick(&self, routes: &[usize], method: &str) -> Option<usize> {
        routes.iter().copied().find(|&r| {
            let m = &self.methods[r];
            m.is_empty() || m.iter().any(|x| x == method)
        })
    }

    fn lookup_trie(&self, trie: &PathTrie, path: &[u8], method: &str) -> RouteMatch {
        let mut node = &trie.root;
        let mut saw_path = node.prefix.first().map(|&r| (r, 0));
        let mut best = self.pick(&node.prefix, method).map(|r| (r, 0));
        let mut complete = true;
        for seg in segments(path) {
            match node.children.get(seg) {
                Some(next) => {
                    node = next;
                    if let Some(&r) = node.prefix.first() {
                        saw_path = Some((r, node.depth));
                        if let Some(r) = self.pick(&node.prefix, method) {
                            best = Some((r, node.depth));
                        }
                    }
                }
                None => {
                    complete = false;
                    break;
                }
            }
        }
        if complete && !node.exact.is_empty() {
            saw_path = node.exact.first().map(|&r| (r, node.depth));
            if let Some(r) = self.pick(&node.exact, method) {
                return RouteMatch::Found { route: r, segments: node.depth };
            }
        }
        match best {
            Some((route, segments)) => RouteMatch::Found { route, segments },
            None => match saw_path {
                Some((route, segments)) => RouteMatch::MethodNotAllowed { route, segments },
                None => RouteMatch::NotFound,
            },
        }
    }

    /// Pairs of routes that claim the same host, path and match kind with overlapping methods.
    pub fn conflicts(routes: &[Route]) -> Vec<Conflict> {
        let mut out = Vec::new();
        for (i, a) in routes.iter().enumerate() {
            for (j, b) in routes.iter().enumerate().take(i) {
                let hosts_overlap = (a.hosts.is_empty() && b.hosts.is_empty())
                    || a.hosts.iter().any(|h| b.hosts.contains(h));
                if !hosts_overlap {
                    continue;
                }
                let methods_overlap = a.methods.is_empty()
                    || b.methods.is_empty()
                    || a.methods.iter().any(|m| b.methods.contains(m));
                if !methods_overlap {
                    continue;
                }
                for (k, pa) in a.paths.iter().enumerate() {
                    if b.paths.contains(pa) {
                        let shown = match pa {
                            PathMatch::Prefix(p) => p.clone(),
                            PathMatch::Exact(p) => format!("={p}"),
                        };
                        out.push(Conflict {
                            path: format!("routes[{i}].paths[{k}]"),
                            problem: format!(
                                "route `{}` claims `{shown}` which route `{}` (routes[{j}]) already claims for the same hosts and methods",
                                a.name, b.name
                            ),
                            fix: "remove one of them, or split them by hosts or methods".into(),
                        });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
