//! sled's trees and keys: the part of the store that sled holds.

use sled::Tree;

/// Key in the `meta` tree: the definitions generation, bumped by every
/// synced change, so that recovery can tell sled lost writes when the
/// message log names a later one.
pub(crate) const GENERATION: &[u8] = b"generation";
/// Key in the `meta` tree: the next queue id to give.
pub(crate) const NEXT_QUEUE: &[u8] = b"next-queue-id";

/// sled's trees.
#[derive(Debug)]
pub(crate) struct Trees {
    pub exchanges: Tree,
    /// User name → [`crate::UserDef`].
    pub users: Tree,
    /// Virtual host name → nothing: the virtual hosts there are.
    pub vhosts: Tree,
    /// User and vhost → [`crate::PermissionDef`].
    pub permissions: Tree,
    /// User, vhost and exchange → [`crate::TopicPermissionDef`].
    pub topic_permissions: Tree,
    pub queues: Tree,
    pub bindings: Tree,
    /// Segment number → [`Summary`].
    pub segments: Tree,
    /// Segment number → the length of its ack file at the last clean
    /// shutdown. Ack files only grow, so a shorter one is damage.
    pub acks: Tree,
    pub meta: Tree,
}
