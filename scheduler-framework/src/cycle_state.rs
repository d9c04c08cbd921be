//! [`CycleState`]: what plugins share within one scheduling cycle of one pod.

use std::any::Any;
use std::collections::{HashMap, HashSet};

/// A value a plugin keeps in the cycle state. Anything `Clone + Send + Sync` is one; cloning
/// matters because preemption evaluates each candidate node on its own copy of the state.
pub trait StateData: Any + Send + Sync {
    /// A boxed copy.
    fn clone_data(&self) -> Box<dyn StateData>;
    /// For downcasting.
    fn as_any(&self) -> &dyn Any;
    /// For downcasting mutably.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_data(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Per-cycle storage keyed by plugin-chosen names, plus which plugins asked to be skipped.
#[derive(Default)]
pub struct CycleState {
    data: HashMap<&'static str, Box<dyn StateData>>,
    /// Filter plugins whose PreFilter returned Skip.
    pub skip_filter: HashSet<String>,
    /// Score plugins whose PreScore returned Skip.
    pub skip_score: HashSet<String>,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        CycleState {
            data: self
                .data
                .iter()
                .map(|(k, v)| (*k, (**v).clone_data()))
                .collect(),
            skip_filter: self.skip_filter.clone(),
            skip_score: self.skip_score.clone(),
        }
    }
}

impl CycleState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a value under `key`.
    pub fn write<T: StateData>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
    }

    /// The value under `key`, if present and of type `T`.
    pub fn read<T: 'static>(&self, key: &'static str) -> Option<&T> {
        self.data.get(key)?.as_ref().as_any().downcast_ref()
    }

    /// The value under `key` mutably, if present and of type `T`.
    pub fn read_mut<T: 'static>(&mut self, key: &'static str) -> Option<&mut T> {
        self.data.get_mut(key)?.as_mut().as_any_mut().downcast_mut()
    }

    /// Removes the value under `key`.
    pub fn delete(&mut self, key: &'static str) {
        self.data.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_round_trip_and_clone_is_deep() {
        let mut s = CycleState::new();
        s.write("k", vec![1, 2]);
        assert_eq!(s.read::<Vec<i32>>("k"), Some(&vec![1, 2]));
        assert_eq!(s.read::<String>("k"), None);
        let mut c = s.clone();
        if let Some(v) = c.read_mut::<Vec<i32>>("k") {
            v.push(3);
        }
        assert_eq!(s.read::<Vec<i32>>("k").map(Vec::len), Some(2));
        assert_eq!(c.read::<Vec<i32>>("k").map(Vec::len), Some(3));
    }
}
