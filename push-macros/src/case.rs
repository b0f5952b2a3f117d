//! serde's rename rules for enum variants, replicated exactly (serde_derive's
//! `internals/case.rs`): a wire name must be the very name serde serializes,
//! which is not always what `heck` would produce (`HTTPError` in snake_case is
//! `h_t_t_p_error` for serde).

/// A `rename_all` rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RenameRule {
    Lower,
    Upper,
    Pascal,
    Camel,
    Snake,
    ScreamingSnake,
    Kebab,
    ScreamingKebab,
}

/// Every rule under the name serde accepts for it.
pub(crate) const RULES: &[(&str, RenameRule)] = &[
    ("lowercase", RenameRule::Lower),
    ("UPPERCASE", RenameRule::Upper),
    ("PascalCase", RenameRule::Pascal),
    ("camelCase", RenameRule::Camel),
    ("snake_case", RenameRule::Snake),
    ("SCREAMING_SNAKE_CASE", RenameRule::ScreamingSnake),
    ("kebab-case", RenameRule::Kebab),
    ("SCREAMING-KEBAB-CASE", RenameRule::ScreamingKebab),
];

impl RenameRule {
    /// The rule serde knows under `name`, if any.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        RULES
            .iter()
            .find(|(candidate, _)| *candidate == name)
            .map(|(_, rule)| *rule)
    }

    /// The message for an unknown rule, worded like serde's own.
    pub(crate) fn unknown_message(name: &str) -> String {
        let expected: Vec<String> = RULES.iter().map(|(rule, _)| format!("{rule:?}")).collect();
        format!(
            "unknown rename rule `rename_all = {name:?}`, expected one of {}",
            expected.join(", ")
        )
    }

    /// The name serde gives to the struct field `field` under this rule.
    pub(crate) fn apply_to_field(self, field: &str) -> String {
        match self {
            Self::Lower | Self::Snake => field.to_owned(),
            Self::Upper | Self::ScreamingSnake => field.to_ascii_uppercase(),
            Self::Pascal => {
                let mut pascal = String::new();
                let mut capitalize = true;
                for ch in field.chars() {
                    if ch == '_' {
                        capitalize = true;
                    } else if capitalize {
                        pascal.push(ch.to_ascii_uppercase());
                        capitalize = false;
                    } else {
                        pascal.push(ch);
                    }
                }
                pascal
            }
            Self::Camel => {
                let pascal = Self::Pascal.apply_to_field(field);
                let mut chars = pascal.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            }
            Self::Kebab => field.replace('_', "-"),
            Self::ScreamingKebab => field.to_ascii_uppercase().replace('_', "-"),
        }
    }

    /// The name serde gives to `variant` under this rule.
    pub(crate) fn apply_to_variant(self, variant: &str) -> String {
        match self {
            Self::Pascal => variant.to_owned(),
            Self::Lower => variant.to_ascii_lowercase(),
            Self::Upper => variant.to_ascii_uppercase(),
            Self::Camel => {
                // serde slices off the first byte; splitting at the first char
                // is the same for ASCII and cannot panic on other input.
                let mut chars = variant.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            }
            Self::Snake => {
                let mut snake = String::new();
                for (i, ch) in variant.char_indices() {
                    if i > 0 && ch.is_uppercase() {
                        snake.push('_');
                    }
                    snake.push(ch.to_ascii_lowercase());
                }
                snake
            }
            Self::ScreamingSnake => Self::Snake.apply_to_variant(variant).to_ascii_uppercase(),
            Self::Kebab => Self::Snake.apply_to_variant(variant).replace('_', "-"),
            Self::ScreamingKebab => Self::ScreamingSnake
                .apply_to_variant(variant)
                .replace('_', "-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RenameRule::{self, *};

    fn apply(rule: RenameRule, variant: &str) -> String {
        rule.apply_to_variant(variant)
    }

    #[test]
    fn every_rule_on_serde_own_examples() {
        // (original, lower, UPPER, camel, snake, SCREAMING, kebab, SCREAMING-KEBAB)
        let cases = [
            (
                "Outcome", "outcome", "OUTCOME", "outcome", "outcome", "OUTCOME", "outcome",
                "OUTCOME",
            ),
            (
                "VeryTasty",
                "verytasty",
                "VERYTASTY",
                "veryTasty",
                "very_tasty",
                "VERY_TASTY",
                "very-tasty",
                "VERY-TASTY",
            ),
            ("A", "a", "A", "a", "a", "A", "a", "A"),
            ("Z42", "z42", "Z42", "z42", "z42", "Z42", "z42", "Z42"),
        ];
        for (original, lower, upper, camel, snake, screaming, kebab, screaming_kebab) in cases {
            assert_eq!(apply(Lower, original), lower);
            assert_eq!(apply(Upper, original), upper);
            assert_eq!(apply(Pascal, original), original);
            assert_eq!(apply(Camel, original), camel);
            assert_eq!(apply(Snake, original), snake);
            assert_eq!(apply(ScreamingSnake, original), screaming);
            assert_eq!(apply(Kebab, original), kebab);
            assert_eq!(apply(ScreamingKebab, original), screaming_kebab);
        }
    }

    #[test]
    fn acronyms_split_at_every_capital_like_serde_not_like_heck() {
        assert_eq!(apply(Snake, "HTTPError"), "h_t_t_p_error");
        assert_eq!(apply(Kebab, "HTTPError"), "h-t-t-p-error");
        assert_eq!(apply(ScreamingSnake, "IOError"), "I_O_ERROR");
        assert_eq!(apply(ScreamingKebab, "IOError"), "I-O-ERROR");
        assert_eq!(apply(Camel, "HTTPError"), "hTTPError");
    }

    #[test]
    fn digits_and_underscores_are_kept_as_they_are() {
        assert_eq!(apply(Snake, "Utf8Text"), "utf8_text");
        assert_eq!(apply(Snake, "Already_Snake"), "already__snake");
        assert_eq!(apply(Kebab, "Already_Snake"), "already--snake");
        assert_eq!(apply(Lower, "Already_Snake"), "already_snake");
    }

    #[test]
    fn non_ascii_is_not_lowercased_and_never_panics() {
        // serde uses `is_uppercase` (Unicode) to split but `to_ascii_lowercase` to lower.
        assert_eq!(apply(Snake, "ÉtéÉvent"), "Été_Évent");
        assert_eq!(apply(Camel, "Été"), "Été");
        assert_eq!(apply(Camel, ""), "");
    }

    #[test]
    fn field_rules_follow_serde() {
        assert_eq!(Snake.apply_to_field("sent_at"), "sent_at");
        assert_eq!(Camel.apply_to_field("sent_at"), "sentAt");
        assert_eq!(Pascal.apply_to_field("sent_at"), "SentAt");
        assert_eq!(Kebab.apply_to_field("sent_at"), "sent-at");
        assert_eq!(ScreamingSnake.apply_to_field("sent_at"), "SENT_AT");
        assert_eq!(ScreamingKebab.apply_to_field("sent_at"), "SENT-AT");
        assert_eq!(Upper.apply_to_field("sent_at"), "SENT_AT");
        assert_eq!(Lower.apply_to_field("sent_at"), "sent_at");
    }

    #[test]
    fn rule_names_are_exactly_serde_ones() {
        assert_eq!(RenameRule::from_name("snake_case"), Some(Snake));
        assert_eq!(
            RenameRule::from_name("SCREAMING-KEBAB-CASE"),
            Some(ScreamingKebab)
        );
        assert_eq!(RenameRule::from_name("PascalCase"), Some(Pascal));
        assert_eq!(RenameRule::from_name("Pascal"), None);
        assert_eq!(RenameRule::from_name("Snake_Case"), None);
        assert_eq!(RenameRule::from_name("kebab_case"), None);
        assert_eq!(RenameRule::from_name(""), None);
        let message = RenameRule::unknown_message("kebab_case");
        assert!(
            message.starts_with("unknown rename rule `rename_all = \"kebab_case\"`"),
            "{message}"
        );
        assert!(message.contains("\"SCREAMING-KEBAB-CASE\""), "{message}");
    }
}
