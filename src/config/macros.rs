//! The `options!` macro: one declaration per option gives its typed field, its default, its
//! help, its deprecated names and its check. See `options.rs` for the table.

/// Where an option's default comes from.
#[derive(Debug, Clone, Copy)]
pub enum DefaultValue {
    /// Text parsed (after `$name` interpolation) like a value from the file.
    Text(&'static str),
    /// Computed at start (e.g. from the user id); `sample` is what `config sample` shows.
    Computed {
        value: fn() -> String,
        sample: &'static str,
    },
    /// No default: the option is optional.
    Unset,
}

impl From<&'static str> for DefaultValue {
    fn from(text: &'static str) -> Self {
        DefaultValue::Text(text)
    }
}

impl DefaultValue {
    /// The text the option takes when it is not in the file.
    pub fn text(&self) -> Option<String> {
        match self {
            DefaultValue::Text(t) => Some((*t).to_string()),
            DefaultValue::Computed { value, .. } => Some(value()),
            DefaultValue::Unset => None,
        }
    }

    /// The text `config sample` shows.
    pub fn sample(&self) -> String {
        match self {
            DefaultValue::Text(t) => (*t).to_string(),
            DefaultValue::Computed { sample, .. } => (*sample).to_string(),
            DefaultValue::Unset => "<None>".to_string(),
        }
    }
}

/// Everything known about one option, for the sample, the checks and "did you mean".
#[derive(Debug, Clone)]
pub struct OptionSpec {
    pub section: &'static str,
    pub name: &'static str,
    pub help: &'static str,
    pub type_name: &'static str,
    pub secret: bool,
    pub default: DefaultValue,
    /// Deprecated `section.name` spellings that are still read, with a warning.
    pub aliases: &'static [&'static str],
}

impl OptionSpec {
    /// `section.name`, the form errors use.
    pub fn key(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }
}

/// Declares the option table. For each section: its INI name, the field and struct that
/// hold it, and its options as doc comment (the help), `name: Type = default`, then optional
/// `aliases [..]` and `check |v| ..` (a non-capturing closure returning `Result<(), String>`).
macro_rules! options {
    (
        $(
            $(#[doc = $sec_doc:literal])*
            [$section:literal] $field:ident : $Struct:ident {
                $(
                    $(#[doc = $doc:literal])+
                    $name:ident : $ty:ty = $default:expr
                        $(, aliases [$($alias:literal),* $(,)?])?
                        $(, check $check:expr)?
                    ;
                )*
            }
        )*
    ) => {
        /// Every option, typed, after phase two. Built only by `Options::resolve`.
        #[derive(Debug, Clone)]
        // The help texts name sections as `[glance]`, which rustdoc would read as links.
        #[allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
        pub struct Options {
            $(
                $(#[doc = $sec_doc])*
                pub $field: $Struct,
            )*
        }

        $(
            $(#[doc = $sec_doc])*
            #[derive(Debug, Clone)]
            #[allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
            pub struct $Struct {
                $(
                    $(#[doc = $doc])+
                    pub $name: $ty,
                )*
            }
        )*

        /// The specification of every option, in table order.
        pub fn option_specs() -> Vec<$crate::config::macros::OptionSpec> {
            vec![
                $($(
                    $crate::config::macros::OptionSpec {
                        section: $section,
                        name: stringify!($name),
                        help: concat!($($doc, "\n"),+),
                        type_name: <$ty as $crate::config::value::OptionValue>::TYPE_NAME,
                        secret: <$ty as $crate::config::value::OptionValue>::SECRET,
                        default: $crate::config::macros::DefaultValue::from($default),
                        aliases: &[$($($alias),*)?],
                    },
                )*)*
            ]
        }

        impl Options {
            /// Types and checks every option (phase two, per option).
            pub(crate) fn resolve(r: &mut $crate::config::resolve::Resolver<'_>) -> Options {
                Options {
                    $(
                        $field: $Struct {
                            $(
                                $name: {
                                    #[allow(unused_mut, unused_assignments)]
                                    let mut check: Option<$crate::config::resolve::Check<$ty>> = None;
                                    $( check = Some($check); )?
                                    r.take::<$ty>($section, stringify!($name), check)
                                },
                            )*
                        },
                    )*
                }
            }

            /// `(section, name, rendered value)` for every option, secrets redacted.
            pub fn effective(&self) -> Vec<(&'static str, &'static str, String)> {
                vec![
                    $($(
                        ($section, stringify!($name),
                         $crate::config::value::OptionValue::render(&self.$field.$name)),
                    )*)*
                ]
            }
        }
    };
}

pub(crate) use options;
