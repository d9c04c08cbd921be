//! The built-in controllers of kube-controller-manager, each a [`crate::Reconciler`] on the
//! shared runtime.

pub mod garbagecollector;
pub mod serviceaccount;
