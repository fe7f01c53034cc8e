//! Enums named by fixed words: the metrics' label sets
//! ([`CloseReason`](crate::metrics::CloseReason) and the others) and the
//! configuration's choices ([`Layout`](crate::Layout),
//! [`ComputeVia`](crate::ComputeVia)). One macro writes each word once, and
//! from it the word a value prints as, the list of every value, and, for a
//! choice, the parse and the error that lists what would have parsed.

/// Declares an enum named by words: the enum, its variants in declaration
/// order (`ALL`, which the metrics' registry indexes by `as usize`), their
/// words (`as_str`, `Display`, and `LABELS` in the same order).
///
/// With `parse as Error "what"` after the variants, the words also parse
/// (`FromStr`), and a word that is none of them is `Error(word)`, whose
/// message names `what` and lists the words.
macro_rules! label_set {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )+
        }
        $( parse as $error:ident $what:literal )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            #[allow(dead_code, reason = "not every set is listed whole")]
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Every word, in the same order.
            pub const LABELS: &'static [&'static str] = &[$($label),+];

            /// The word it prints and parses as.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        $(
            #[doc = concat!("A word that is no [`", stringify!($name), "`].")]
            #[derive(Debug, Clone, PartialEq, Eq)]
            pub struct $error(pub String);

            impl std::fmt::Display for $error {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    write!(
                        f,
                        concat!("unknown ", $what, " {:?}: expected {}"),
                        self.0,
                        $crate::names::one_of($name::LABELS)
                    )
                }
            }

            impl std::error::Error for $error {}

            impl std::str::FromStr for $name {
                type Err = $error;

                fn from_str(word: &str) -> Result<Self, $error> {
                    $name::ALL
                        .iter()
                        .copied()
                        .find(|value| value.as_str() == word)
                        .ok_or_else(|| $error(word.to_owned()))
                }
            }
        )?
    };
}

/// `a, b or c`: the words a choice accepts, for its error.
pub(crate) fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::one_of;

    #[test]
    fn the_accepted_words_read_as_a_list() {
        assert_eq!(one_of(&["split"]), "split");
        assert_eq!(
            one_of(&["runtime", "spawn-blocking"]),
            "runtime or spawn-blocking"
        );
        assert_eq!(
            one_of(&["split", "single", "sharded"]),
            "split, single or sharded"
        );
    }
}
