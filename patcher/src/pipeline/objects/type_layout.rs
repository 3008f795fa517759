//! A type's layout as far as data written by old code and read by new code is concerned:
//! what the DWARF reader produces and the layout check compares.

/// Size, alignment and shape of one named type, as DWARF describes it. `None` where DWARF
/// leaves a value out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Layout {
    pub size: Option<u64>,
    pub align: Option<u64>,
    pub shape: Shape,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Shape {
    Struct(Vec<Field>),
    Union(Vec<Field>),
    /// An enum with data: where its discriminant lives (none for a single variant) and each
    /// variant's discriminant value (none for the variant a niche encoding leaves implicit).
    Enum {
        discriminant: Option<Discriminant>,
        variants: Vec<Variant>,
    },
    /// An enum without data: its integer type and each variant's value.
    Fieldless {
        repr: String,
        values: Vec<(String, i128)>,
    },
}

/// A field: identified by its name (a rename reads as one field removed and one added: the
/// data at that offset means something else to the new code).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    pub name: String,
    pub offset: Option<u64>,
    /// As DWARF spells it (`alloc::vec::Vec<u8>`, `&mut demo::Ball`, `[u32; 4]`).
    pub type_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Discriminant {
    pub offset: Option<u64>,
    pub type_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Variant {
    pub name: String,
    pub discriminant: Option<u64>,
    pub fields: Vec<Field>,
}

impl Shape {
    /// How a refusal names the shape: `struct`, `enum`…
    pub fn kind(&self) -> &'static str {
        match self {
            Shape::Struct(_) => "struct",
            Shape::Union(_) => "union",
            Shape::Enum { .. } => "enum",
            Shape::Fieldless { .. } => "fieldless enum",
        }
    }
}

/// A field at a known offset, for the layout tests.
#[cfg(test)]
pub(crate) fn field(name: &str, offset: u64, type_name: &str) -> Field {
    Field {
        name: name.into(),
        offset: Some(offset),
        type_name: type_name.into(),
    }
}
