//! What the operator watches: every namespace, or a list of them (`--namespace a,b`, the chart's
//! `watchNamespaces`, with a Role per namespace instead of a ClusterRole).
//!
//! A list is watched as one watch per namespace, merged into what a single watch would give:
//! the merged stream lists once every namespace has listed (a cache that looked complete after
//! the first namespace would prune the accounts of the others), and each later relist of one
//! namespace is handed on as a relist of all of them, the other namespaces' objects as last
//! seen. Objects of one namespace keep their order; across namespaces there is none to keep.
//! The price: with a list, the merge keeps its own copy of every watched object (a single
//! namespace or all of them is one plain watch, with none).

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;

/// The namespaces to watch: none means all of them.
pub fn parse(list: &[String]) -> Vec<String> {
    let mut namespaces: Vec<String> = list
        .iter()
        .flat_map(|n| n.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    namespaces.sort();
    namespaces.dedup();
    namespaces
}

/// A watch of `K` over `namespaces` (all of them when empty), with `config`.
pub fn watch<K>(
    client: &kube::Client,
    namespaces: &[String],
    config: watcher::Config,
    api_of: impl Fn(&kube::Client, Option<&str>) -> Api<K>,
) -> BoxStream<'static, watcher::Result<Event<K>>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    use kube::runtime::WatchStreamExt;
    match namespaces {
        [] => watcher::watcher(api_of(client, None), config)
            .default_backoff()
            .boxed(),
        [one] => watcher::watcher(api_of(client, Some(one)), config)
            .default_backoff()
            .boxed(),
        many => {
            let streams = many.iter().enumerate().map(|(i, ns)| {
                watcher::watcher(api_of(client, Some(ns)), config.clone())
                    .default_backoff()
                    .map(move |event| (i, event))
                    .boxed()
            });
            merged(stream::select_all(streams), many.len()).boxed()
        }
    }
}

/// The events of `count` per-namespace watches (tagged with their index) as one watch's.
pub fn merged<K, S>(tagged: S, count: usize) -> impl Stream<Item = watcher::Result<Event<K>>> + Send
where
    K: Resource + Clone + Send + 'static,
    S: Stream<Item = (usize, watcher::Result<Event<K>>)> + Send,
{
    let mut merger = Merger::new(count);
    tagged.flat_map(move |(i, event)| {
        let out: Vec<watcher::Result<Event<K>>> = match event {
            Ok(event) => merger.take(i, event).into_iter().map(Ok).collect(),
            Err(error) => vec![Err(error)],
        };
        stream::iter(out)
    })
}

/// What each namespace's watch last said, for handing on relists whole.
struct Merger<K> {
    /// Objects by name, per watch.
    current: Vec<BTreeMap<String, K>>,
    /// A relist under way, per watch.
    relisting: Vec<Option<BTreeMap<String, K>>>,
    /// Whether each watch has listed once.
    listed: Vec<bool>,
}

impl<K: Resource + Clone> Merger<K> {
    fn new(count: usize) -> Self {
        Merger {
            current: vec![BTreeMap::new(); count],
            relisting: vec![None; count],
            listed: vec![false; count],
        }
    }

    fn all_listed(&self) -> bool {
        self.listed.iter().all(|l| *l)
    }

    /// What to hand on for event `event` of watch `i`.
    fn take(&mut self, i: usize, event: Event<K>) -> Vec<Event<K>> {
        match event {
            Event::Init => {
                self.relisting[i] = Some(BTreeMap::new());
                Vec::new()
            }
            Event::InitApply(object) => {
                self.relisting[i]
                    .get_or_insert_with(BTreeMap::new)
                    .insert(object.name_any(), object);
                Vec::new()
            }
            Event::InitDone => {
                self.current[i] = self.relisting[i].take().unwrap_or_default();
                self.listed[i] = true;
                if !self.all_listed() {
                    return Vec::new();
                }
                let mut out = vec![Event::Init];
                out.extend(
                    self.current
                        .iter()
                        .flat_map(|objects| objects.values().cloned())
                        .map(Event::InitApply),
                );
                out.push(Event::InitDone);
                out
            }
            Event::Apply(object) => {
                self.current[i].insert(object.name_any(), object.clone());
                // Before every namespace listed, the first relist brings it.
                if self.all_listed() {
                    vec![Event::Apply(object)]
                } else {
                    Vec::new()
                }
            }
            Event::Delete(object) => {
                self.current[i].remove(&object.name_any());
                if self.all_listed() {
                    vec![Event::Delete(object)]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn cm(ns: &str, name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.namespace = Some(ns.into());
        cm.metadata.name = Some(name.into());
        cm
    }

    fn names(events: &[Event<ConfigMap>]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Init => "Init".to_string(),
                Event::InitDone => "InitDone".to_string(),
                Event::InitApply(o) => {
                    format!("InitApply {}/{}", o.namespace().unwrap(), o.name_any())
                }
                Event::Apply(o) => format!("Apply {}/{}", o.namespace().unwrap(), o.name_any()),
                Event::Delete(o) => format!("Delete {}/{}", o.namespace().unwrap(), o.name_any()),
            })
            .collect()
    }

    #[test]
    fn namespaces_are_a_sorted_list_and_none_means_all() {
        assert_eq!(parse(&["b, a".into(), "a".into()]), ["a", "b"]);
        assert!(parse(&[]).is_empty());
        assert!(parse(&[" ".into()]).is_empty());
    }

    /// Nothing is handed on before every namespace listed (a cache complete after the first
    /// would make the others' accounts look deleted); a later relist of one namespace is a
    /// relist of all, the others as last seen.
    #[test]
    fn relists_are_handed_on_whole_and_only_once_every_namespace_listed() {
        let mut m = Merger::new(2);
        let mut out = Vec::new();
        for (i, e) in [
            (0, Event::Init),
            (0, Event::InitApply(cm("a", "alice"))),
            (0, Event::InitDone),
            (0, Event::Apply(cm("a", "amy"))),
            (1, Event::Init),
            (1, Event::InitApply(cm("b", "bob"))),
        ] {
            out.extend(m.take(i, e));
        }
        assert!(out.is_empty(), "{:?}", names(&out));
        out.extend(m.take(1, Event::InitDone));
        assert_eq!(
            names(&out),
            [
                "Init",
                "InitApply a/alice",
                "InitApply a/amy",
                "InitApply b/bob",
                "InitDone"
            ]
        );
        // Then changes pass as they come.
        assert_eq!(
            names(&m.take(1, Event::Delete(cm("b", "bob")))),
            ["Delete b/bob"]
        );
        // A relist of `a` (after a watch error) is a relist of both.
        let mut out = Vec::new();
        for e in [
            Event::Init,
            Event::InitApply(cm("a", "alice")),
            Event::InitDone,
        ] {
            out.extend(m.take(0, e));
        }
        assert_eq!(names(&out), ["Init", "InitApply a/alice", "InitDone"]);
        assert_eq!(
            names(&m.take(1, Event::Apply(cm("b", "ben")))),
            ["Apply b/ben"]
        );
    }
}
