//! Which variant of a rule with plans or overrides takes a request (see
//! `policy::plans`): the request's plan, from the policy's `plan`
//! sources, and the value of the key part the rule's overrides are on.

use super::attrs::Attrs;
use crate::path::Params;
use crate::policy::{Choice, KeyPart, Policy, Rule, Takes};

/// The request's plan (index into the policy's plan names): the first
/// source with a value names it; none, or one not declared, is the default
/// plan. `None` when the policy has no plans.
pub(super) fn request_plan(attrs: &mut Attrs<'_>, policy: &Policy) -> Option<usize> {
    let source = policy.plan.as_ref()?;
    let named = attrs.first_value(policy, &source.from);
    Some(source.plan_of(named.as_deref()))
}

/// The request's plan by name, as a key part reads it.
pub(super) fn plan_name(attrs: &mut Attrs<'_>, policy: &Policy) -> Option<String> {
    let p = request_plan(attrs, policy)?;
    policy.plan.as_ref().and_then(|s| s.names.get(p)).cloned()
}

/// The variant `rule` of its rule takes this request.
pub(super) fn takes(attrs: &mut Attrs<'_>, policy: &Policy, rule: &Rule, choice: &Choice, params: &Params) -> bool {
    let value = override_value(attrs, policy, rule, choice, params);
    let plan = if choice.group.plans.is_empty() { None } else { request_plan(attrs, policy) };
    choice.group.picks(&choice.takes, value.as_deref(), plan)
}

/// What the variant that takes the request stands for, for people:
/// `plan pro`, `plan free (the default: the request names no plan)`,
/// `override for "acme"`; `None` for a rule without plans or overrides,
/// or a variant that does not take the request.
pub(super) fn describe(attrs: &mut Attrs<'_>, policy: &Policy, rule: &Rule, params: &Params) -> Option<String> {
    let choice = rule.choice.as_ref()?;
    if !takes(attrs, policy, rule, choice, params) {
        return None;
    }
    let plan = match policy.plan.as_ref() {
        None => None,
        Some(source) => {
            let named = attrs.first_value(policy, &source.from);
            let p = source.plan_of(named.as_deref());
            let name = source.names.get(p).map_or("?", String::as_str);
            Some(match named {
                _ if p != source.default => format!("plan {name}"),
                None => format!("plan {name} (the default: the request names no plan)"),
                Some(v) if !source.names.iter().any(|n| n.eq_ignore_ascii_case(v.trim())) => format!("plan {name} (the default: {v:?} is not a plan)"),
                Some(_) => format!("plan {name} (the default)"),
            })
        }
    };
    Some(match (&choice.takes, plan) {
        (Takes::Override(v), _) => format!("override for {v:?}"),
        (Takes::Plan(_), Some(plan)) => plan,
        (_, Some(plan)) => format!("{plan}: the rule's own limit"),
        (_, None) => "the rule's own limit (no override for this key)".to_string(),
    })
}

/// The value of the key part the rule's overrides are on, case-folded as
/// its key reads it; `None` when it has none, or the rule no overrides.
fn override_value(attrs: &mut Attrs<'_>, policy: &Policy, rule: &Rule, choice: &Choice, params: &Params) -> Option<Vec<u8>> {
    let part = rule.key.get(choice.group.on?)?;
    match (part, rule.integrations.first()) {
        (KeyPart::Integration, Some(own)) => Some(own.as_bytes().to_vec()),
        (KeyPart::Method, _) if rule.head_as_get && attrs.method() == "HEAD" => Some(b"get".to_vec()),
        _ => attrs.part(policy, part, params).map(|mut v| {
            v.make_ascii_lowercase();
            v
        }),
    }
}
