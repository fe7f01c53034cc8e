//! The chainable setters of the library's configurations
//! ([`ServerConfig`](crate::ServerConfig), [`EchoConfig`](crate::EchoConfig),
//! [`ComputeConfig`](crate::ComputeConfig)): one per field, documented by
//! a link to its field, whose documentation states its meaning and default
//! once.

/// `setters!(Type { field: FieldType, ... })` gives `Type` a method per
/// field that sets it and returns the configuration.
macro_rules! setters {
    ($type:ty { $( $field:ident: $value:ty, )+ }) => {
        impl $type {
            $(
                #[doc = concat!(
                    "Sets [`", stringify!($field), "`](field@Self::", stringify!($field),
                    "), and returns the configuration."
                )]
                pub fn $field(mut self, $field: $value) -> Self {
                    self.$field = $field;
                    self
                }
            )+
        }
    };
}
