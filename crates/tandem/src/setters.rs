//! The chainable setters of the library's configurations
//! ([`ServerConfig`](crate::ServerConfig), [`EchoConfig`](crate::EchoConfig)):
//! one per field, each with the documentation that states its default.

/// `setters!(Type { /// doc \n field: FieldType, ... })` gives `Type` a
/// method per field that sets it and returns the configuration.
macro_rules! setters {
    ($type:ty { $( $(#[$doc:meta])* $field:ident: $value:ty, )+ }) => {
        impl $type {
            $(
                $(#[$doc])*
                pub fn $field(mut self, $field: $value) -> Self {
                    self.$field = $field;
                    self
                }
            )+
        }
    };
}
