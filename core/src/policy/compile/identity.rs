//! A rule's identity: a hash of its name and key spec, which its buckets
//! and adaptive health are kept under across reloads.

use crate::hash::Fnv;
use crate::policy::KeyPart;

/// A rule's identity: FNV-1a (64-bit, [`Fnv`]) of the bytes below, which
/// depend on the rule's name and key spec only, so that a rule keeps its
/// buckets (and an adaptive rule its health) across reloads that change
/// anything else.
///
/// - the name, as a string;
/// - then each key part in order: one tag byte, then its fields.
///
/// A string is its UTF-8 length as 4 bytes little-endian, then its bytes;
/// a list of strings is its length as 4 bytes little-endian, then each
/// string. The tags and fields:
///
/// | tag | part | fields |
/// |-----|------|--------|
/// | 1 | `client_ip` | |
/// | 2 | `method` | |
/// | 3 | `authority` | |
/// | 4 | `path` | |
/// | 5 | `tenant` | |
/// | 6 | `integration` | |
/// | 7 | header | name (string) |
/// | 8 | body field | path (list) |
/// | 9 | path parameter | name (string) |
/// | 10 | template parameter | name, then the template's source (strings) |
/// | 11 | query parameter | name (string) |
/// | 12 | property | path (list) |
/// | 13 | constant | value (string) |
/// | 14 | `jsonrpc_method` | |
/// | 15 | `tool` | |
/// | 16 | the request's plan (a plan's variant of a rule, see `plans`) | |
///
/// The fields are as compiled (a header name lower case, for one). Every
/// part is self-delimiting, so distinct (name, key) pairs encode to
/// distinct bytes. Changing this encoding (a tag, a field, the order)
/// gives every rule a new identity: `identities_are_pinned` in the policy
/// tests fails for that reason.
///
/// This encoding replaced a hash of the key's `Debug` text, so the version
/// that brought it gave each rule a new identity once: the buckets and
/// adaptive health in the instance's shared data started fresh at that
/// upgrade, as they do at an Envoy restart. The counter service never sees
/// identities (it knows a global key by its rule's name and the key's text),
/// so global counts were not affected.
pub(crate) fn rule_identity(name: &str, key: &[KeyPart]) -> u64 {
    let mut out = Vec::with_capacity(64);
    string(&mut out, name);
    for part in key {
        match part {
            KeyPart::ClientIp => out.push(1),
            KeyPart::Method => out.push(2),
            KeyPart::Authority => out.push(3),
            KeyPart::Path => out.push(4),
            KeyPart::Tenant => out.push(5),
            KeyPart::Integration => out.push(6),
            KeyPart::Header(name) => {
                out.push(7);
                string(&mut out, name);
            }
            KeyPart::Body(path) => {
                out.push(8);
                list(&mut out, path);
            }
            KeyPart::PathParam(name) => {
                out.push(9);
                string(&mut out, name);
            }
            KeyPart::TemplateParam { name, template } => {
                out.push(10);
                string(&mut out, name);
                string(&mut out, template.source());
            }
            KeyPart::Query(name) => {
                out.push(11);
                string(&mut out, name);
            }
            KeyPart::Property(path) => {
                out.push(12);
                list(&mut out, path);
            }
            KeyPart::Const(value) => {
                out.push(13);
                string(&mut out, value);
            }
            KeyPart::JsonRpcMethod => out.push(14),
            KeyPart::Tool => out.push(15),
            KeyPart::Plan => out.push(16),
        }
    }
    Fnv::default().write(&out).finish()
}

/// Appends a string of [`rule_identity`]'s encoding: length, then bytes.
fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends a list of [`rule_identity`]'s encoding: count, then strings.
fn list(out: &mut Vec<u8>, items: &[String]) {
    out.extend_from_slice(&u32::try_from(items.len()).unwrap_or(u32::MAX).to_le_bytes());
    for s in items {
        string(out, s);
    }
}
