//! Plans and overrides: a rule whose limit depends on the request.
//!
//! The policy's `plan` section says where a request's plan comes from
//! (`free`, `pro`, ...) and which plan a request without one (or with an
//! unknown one) is on. A rule may give some plans a limit of their own
//! (`plans`) and some values of one key part a limit of their own
//! (`overrides`). Validation expands such a rule into variants, adjacent in
//! `Policy::rules` and sharing its name: the rule as written (its `limit`),
//! one per plan it lists and one per override, each a whole rule with its
//! limit, so that everything that reads a rule's limit (its buckets, its
//! lease and the counter service's asks, the 429 and its headers, logs and
//! metrics) reads the one the request was decided on. Exactly one variant
//! takes a request (see [`Choice`]).
//!
//! A plan variant's key ends with the request's plan ([`super::KeyPart::Plan`]),
//! so a key on another plan is another bucket and another key at the
//! counter service: changing plan never reinterprets a bucket counted at
//! another plan's limit. The rule as written keeps its key and identity,
//! so adding plans to a rule keeps the counts of the keys it already had.
//! An override variant keeps them too: its value is in the key already, and
//! a new override applies at once to the key's bucket, as a limit changed
//! on reload does.

use std::sync::Arc;

/// Where a request's plan comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanSource {
    /// Key sources; the first with a value names the plan.
    pub from: Vec<super::KeyPart>,
    /// Plan names, lower case.
    pub names: Vec<String>,
    /// Index into `names` of the plan of a request that names none, or
    /// one that is not in `names`.
    pub default: usize,
}

impl PlanSource {
    /// The plan a request naming `value` is on: a declared name (compared
    /// without ASCII case and surrounding blanks), else the default; a
    /// client cannot reach a plan by sending garbage.
    pub fn plan_of(&self, value: Option<&str>) -> usize {
        value.map(str::trim).and_then(|v| self.names.iter().position(|n| n.eq_ignore_ascii_case(v))).unwrap_or(self.default)
    }
}

/// Which requests one variant of a rule with plans or overrides takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub takes: Takes,
    /// What every variant of the rule looks at, shared by them.
    pub group: Arc<Group>,
}

/// The limit a variant stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Takes {
    /// The rule's own `limit`: no override, and a plan the rule does not list.
    Written,
    /// A plan's limit (index into `PlanSource::names`).
    Plan(usize),
    /// An override's limit, for this key value (case-folded).
    Override(String),
}

/// A rule's plans and overrides, as every variant of it sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    /// The plans the rule gives a limit of their own (indices).
    pub plans: Vec<usize>,
    /// The key part (index into the rule's key) its overrides are on.
    pub on: Option<usize>,
    /// The overridden values, case-folded and sorted.
    pub values: Vec<String>,
}

impl Group {
    /// The variant for a request whose override part reads `value` (its
    /// case-folded bytes) and whose plan is `plan`: an override first,
    /// then a listed plan, else the rule as written.
    pub fn choose(&self, value: Option<&[u8]>, plan: Option<usize>) -> Takes {
        match self.overridden(value) {
            Some(v) => Takes::Override(v.to_string()),
            None => match plan {
                Some(p) if self.plans.contains(&p) => Takes::Plan(p),
                _ => Takes::Written,
            },
        }
    }

    /// [`Group::choose`] is `takes`, without allocating.
    pub fn picks(&self, takes: &Takes, value: Option<&[u8]>, plan: Option<usize>) -> bool {
        match (self.overridden(value), takes) {
            (Some(v), Takes::Override(t)) => v == t,
            (Some(_), _) | (None, Takes::Override(_)) => false,
            (None, Takes::Plan(p)) => plan == Some(*p) && self.plans.contains(p),
            (None, Takes::Written) => !plan.is_some_and(|p| self.plans.contains(&p)),
        }
    }

    /// The override for this key value, if any.
    fn overridden(&self, value: Option<&[u8]>) -> Option<&str> {
        let v = value?;
        let i = self.values.binary_search_by(|x| x.as_bytes().cmp(v)).ok()?;
        self.values.get(i).map(String::as_str)
    }
}
