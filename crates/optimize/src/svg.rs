//! SVG: a conservative minifier that only removes what an SVG optimiser
//! removes by default and that no renderer shows. Removed: comments,
//! `<metadata>`, elements and attributes in editors' namespaces (Inkscape,
//! Sodipodi, Illustrator, Sketch, Figma, …, and RDF/Dublin Core/Creative
//! Commons, which only metadata uses) with their `xmlns:` declarations,
//! whitespace-only text outside text content (`text`, `tspan`, `textPath`,
//! `title`, `desc`, `style`, `script`, `foreignObject` and anything under
//! `xml:space="preserve"`), and whitespace between attributes inside tags.
//! Everything else is copied byte for byte: attribute values, text,
//! entity references, CDATA, the XML declaration, the DOCTYPE and
//! processing instructions (an `xml-stylesheet` styles the image).
//!
//! The result is parsed again and must be the same tree as the input less
//! what was removed: same elements, attributes and values in the same
//! order, same text.

use roxmltree::{Document, Node, NodeType, ParsingOptions};

use crate::{Format, OptimizeError};

const SVG_NS: &str = "http://www.w3.org/2000/svg";
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Namespaces of editors' private data and of metadata (SVGO's list).
const EDITOR_NAMESPACES: [&str; 19] = [
    "http://creativecommons.org/ns#",
    "http://inkscape.sourceforge.net/DTD/sodipodi-0.dtd",
    "http://ns.adobe.com/AdobeIllustrator/10.0/",
    "http://ns.adobe.com/AdobeSVGViewerExtensions/3.0/",
    "http://ns.adobe.com/Extensibility/1.0/",
    "http://ns.adobe.com/Flows/1.0/",
    "http://ns.adobe.com/GenericCustomNamespace/1.0/",
    "http://ns.adobe.com/ImageReplacement/1.0/",
    "http://ns.adobe.com/SaveForWeb/1.0/",
    "http://ns.adobe.com/Variables/1.0/",
    "http://ns.adobe.com/XPath/1.0/",
    "http://purl.org/dc/elements/1.1/",
    "http://schemas.microsoft.com/visio/2003/SVGExtensions/",
    "http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd",
    "http://taptrix.com/vectorillustrator/svg_extensions",
    "http://www.bohemiancoding.com/sketch/ns",
    "http://www.figma.com/figma/ns",
    "http://www.inkscape.org/namespaces/inkscape",
    "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
];

/// Elements whose whitespace-only text may be shown or mean something.
const TEXT_CONTENT: [&str; 8] = [
    "text",
    "tspan",
    "textPath",
    "title",
    "desc",
    "style",
    "script",
    "foreignObject",
];

pub(crate) fn optimize(data: &[u8]) -> Result<Vec<u8>, OptimizeError> {
    let text = std::str::from_utf8(data).map_err(|e| OptimizeError::invalid(Format::Svg, format!("not UTF-8: {e}")))?;
    let doc = parse(text).map_err(|e| OptimizeError::invalid(Format::Svg, e))?;
    if doc.root_element().tag_name().name() != "svg" {
        return Err(OptimizeError::invalid(
            Format::Svg,
            format!(
                "the root element is <{}>, not <svg>",
                doc.root_element().tag_name().name()
            ),
        ));
    }
    let mut edits = Vec::new();
    // Markup that entities expand to has no place of its own in the file to
    // edit: such a file is left as it is.
    let Some(out) = collect_edits(text, doc.root(), &mut edits).and_then(|()| apply(text, &edits)) else {
        return Ok(data.to_vec());
    };
    if out.len() >= text.len() {
        return Ok(data.to_vec());
    }
    let new = parse(&out).map_err(|e| OptimizeError::changed(Format::Svg, format!("it does not parse: {e}")))?;
    same_tree(text, doc.root(), new.root()).map_err(|e| OptimizeError::changed(Format::Svg, e))?;
    Ok(out.into_bytes())
}

fn parse(text: &str) -> Result<Document<'_>, String> {
    Document::parse_with_options(
        text,
        ParsingOptions {
            allow_dtd: true,
            ..ParsingOptions::default()
        },
    )
    .map_err(|e| e.to_string())
}

fn in_editor_namespace(ns: Option<&str>) -> bool {
    ns.is_some_and(|ns| EDITOR_NAMESPACES.contains(&ns))
}

/// Whether `node` of the document parsed from `source` goes (with everything in it).
fn removed(source: &str, node: Node<'_, '_>) -> bool {
    match node.node_type() {
        NodeType::Comment => true,
        NodeType::Element => {
            let name = node.tag_name();
            in_editor_namespace(name.namespace()) || (name.namespace() == Some(SVG_NS) && name.name() == "metadata")
        }
        NodeType::Text => {
            // Only raw whitespace is removed as text (never an entity or a CDATA section).
            source[node.range()].chars().all(|c| c.is_ascii_whitespace())
                && !node.ancestors().any(|a| {
                    a.is_element()
                        && (TEXT_CONTENT.contains(&a.tag_name().name())
                            || a.attribute((XML_NS, "space")) == Some("preserve"))
                })
        }
        NodeType::Root | NodeType::PI => false,
    }
}

/// A byte range of the input and what replaces it.
type Edit = (std::ops::Range<usize>, String);

fn collect_edits(text: &str, node: Node<'_, '_>, edits: &mut Vec<Edit>) -> Option<()> {
    for child in node.children() {
        if removed(text, child) {
            edits.push((child.range(), String::new()));
        } else if child.is_element() {
            let tag = start_tag(text, child.range().start)?;
            edits.push((child.range().start..tag.end, tag.rebuilt(child)));
            collect_edits(text, child, edits)?;
        }
    }
    Some(())
}

/// The text with the edits made; None when they are not in order.
fn apply(text: &str, edits: &[Edit]) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (range, replacement) in edits {
        out.push_str(text.get(at..range.start)?);
        out.push_str(replacement);
        at = range.end;
    }
    out.push_str(&text[at..]);
    Some(out)
}

/// A start tag as written: its name, its attributes (name and quoted value
/// exactly as in the source), whether it closes itself, and where it ends.
struct StartTag<'a> {
    name: &'a str,
    attributes: Vec<(&'a str, &'a str)>,
    empty: bool,
    end: usize,
}

impl StartTag<'_> {
    /// The tag with single spaces between attributes and without editors' attributes.
    fn rebuilt(&self, element: Node<'_, '_>) -> String {
        let mut s = format!("<{}", self.name);
        for (name, quoted) in &self.attributes {
            if !editor_attribute(element, name) {
                s.push(' ');
                s.push_str(name);
                s.push('=');
                s.push_str(quoted);
            }
        }
        s.push_str(if self.empty { "/>" } else { ">" });
        s
    }
}

/// An attribute in an editor's namespace, or an `xmlns:` declaration of one.
fn editor_attribute(element: Node<'_, '_>, name: &str) -> bool {
    match name.split_once(':') {
        Some(("xmlns", prefix)) => in_editor_namespace(element.lookup_namespace_uri(Some(prefix))),
        Some((prefix, _)) => in_editor_namespace(element.lookup_namespace_uri(Some(prefix))),
        None => false,
    }
}

/// Reads the start tag at `at` (the parser has already checked that it is
/// well-formed); None when there is none there.
fn start_tag(text: &str, at: usize) -> Option<StartTag<'_>> {
    let b = text.as_bytes();
    if b.get(at) != Some(&b'<') {
        return None;
    }
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let mut i = at + 1;
    let name_start = i;
    while i < b.len() && !is_space(b[i]) && b[i] != b'/' && b[i] != b'>' {
        i += 1;
    }
    let name = &text[name_start..i];
    let mut attributes = Vec::new();
    loop {
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        match b.get(i)? {
            b'>' => {
                return Some(StartTag {
                    name,
                    attributes,
                    empty: false,
                    end: i + 1,
                })
            }
            b'/' if b.get(i + 1) == Some(&b'>') => {
                return Some(StartTag {
                    name,
                    attributes,
                    empty: true,
                    end: i + 2,
                })
            }
            _ => {}
        }
        let attr_start = i;
        while i < b.len() && !is_space(b[i]) && b[i] != b'=' {
            i += 1;
        }
        let attr = &text[attr_start..i];
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        let quote = *b.get(i).filter(|q| matches!(q, b'"' | b'\''))?;
        let value_start = i;
        i += 1;
        while i < b.len() && b[i] != quote {
            i += 1;
        }
        if i == b.len() {
            return None;
        }
        i += 1;
        attributes.push((attr, &text[value_start..i]));
    }
}

/// A child as the comparison sees it: adjacent texts are one text (removing
/// a comment between two texts joins them).
enum Item<'a, 'input> {
    Text(String),
    Node(Node<'a, 'input>),
}

fn items<'a, 'input>(children: impl Iterator<Item = Node<'a, 'input>>) -> Vec<Item<'a, 'input>> {
    let mut out: Vec<Item<'a, 'input>> = Vec::new();
    for c in children {
        match (c.text().filter(|_| c.is_text()), out.last_mut()) {
            (Some(t), Some(Item::Text(prev))) => prev.push_str(t),
            (Some(t), _) => out.push(Item::Text(t.to_string())),
            (None, _) => out.push(Item::Node(c)),
        }
    }
    out
}

/// `new` is `old` less what [`removed`] and [`editor_attribute`] take out.
fn same_tree(source: &str, old: Node<'_, '_>, new: Node<'_, '_>) -> Result<(), String> {
    let describe = |i: Option<&Item<'_, '_>>| match i {
        None => "nothing".to_string(),
        Some(Item::Text(_)) => "text".to_string(),
        Some(Item::Node(n)) if n.is_element() => format!("<{}>", n.tag_name().name()),
        Some(Item::Node(n)) => format!("{:?}", n.node_type()),
    };
    let kept = items(old.children().filter(|c| !removed(source, *c)));
    let ours = items(new.children());
    for i in 0..kept.len().max(ours.len()) {
        let (a, b) = (kept.get(i), ours.get(i));
        match (a, b) {
            (Some(Item::Text(x)), Some(Item::Text(y))) if x == y => {}
            (Some(Item::Node(x)), Some(Item::Node(y))) if x.node_type() == y.node_type() => match x.node_type() {
                NodeType::Element => {
                    if x.tag_name() != y.tag_name() {
                        return Err(format!("{} became {}", describe(a), describe(b)));
                    }
                    let attrs = |n: Node<'_, '_>| -> Vec<(Option<String>, String, String)> {
                        n.attributes()
                            .filter(|at| !in_editor_namespace(at.namespace()))
                            .map(|at| {
                                (
                                    at.namespace().map(str::to_string),
                                    at.name().to_string(),
                                    at.value().to_string(),
                                )
                            })
                            .collect()
                    };
                    if attrs(*x) != attrs(*y) {
                        return Err(format!("the attributes of {} changed", describe(a)));
                    }
                    same_tree(source, *x, *y)?;
                }
                NodeType::PI if x.pi() != y.pi() => return Err("a processing instruction changed".into()),
                _ => {}
            },
            _ => return Err(format!("{} became {}", describe(a), describe(b))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn min(svg: &str) -> String {
        String::from_utf8(optimize(svg.as_bytes()).unwrap()).unwrap()
    }

    /// Comments, metadata, editors' data and layout whitespace go; text whitespace stays.
    #[test]
    fn removes_only_what_is_not_shown() {
        let svg = concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<!-- made by hand -->\n",
            "<svg xmlns=\"http://www.w3.org/2000/svg\"\n",
            "     xmlns:inkscape=\"http://www.inkscape.org/namespaces/inkscape\"\n",
            "     xmlns:sodipodi=\"http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd\"\n",
            "     width=\"10\"   height='10' inkscape:version=\"1.3\">\n",
            "  <metadata><rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\"/></metadata>\n",
            "  <sodipodi:namedview pagecolor=\"#fff\"/>\n",
            "  <g inkscape:label=\"Layer 1\" fill=\"red\">\n",
            "    <rect x=\"1\" y=\"1\" width=\"8\" height=\"8\"/> <!-- a square -->\n",
            "  </g>\n",
            "  <text x=\"0\" y=\"9\"><tspan>a</tspan> <tspan>b &amp; c</tspan></text>\n",
            "  <g xml:space=\"preserve\"> </g>\n",
            "</svg>\n",
        );
        assert_eq!(
            min(svg),
            concat!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\n",
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height='10'>",
                "<g fill=\"red\"><rect x=\"1\" y=\"1\" width=\"8\" height=\"8\"/></g>",
                "<text x=\"0\" y=\"9\"><tspan>a</tspan> <tspan>b &amp; c</tspan></text>",
                "<g xml:space=\"preserve\"> </g></svg>\n",
            )
        );
    }

    #[test]
    fn an_already_minimal_svg_is_returned_as_it_was() {
        let svg = "<svg xmlns=\"http://www.w3.org/2000/svg\"><path d=\"M0 0h1\"/></svg>";
        assert_eq!(min(svg), svg);
    }

    /// Markup from an entity has no bytes of its own to edit: such a file is
    /// left as it is or shrunk only where the check passes, never broken.
    #[test]
    fn entities_that_expand_to_markup_are_safe() {
        let svg = concat!(
            "<!DOCTYPE svg [<!ENTITY e \"<g> <!-- c --> </g>\">]>\n",
            "<svg xmlns=\"http://www.w3.org/2000/svg\">\n  &e;\n  <!-- x -->\n</svg>",
        );
        let out = min(svg);
        assert!(out.len() <= svg.len());
        assert!(out.contains("&e;") && out.contains("<!ENTITY e"), "{out}");
    }

    #[test]
    fn malformed_and_foreign_documents_are_refused() {
        for bad in ["<svg><g></svg>", "<html/>", "\u{feff}"] {
            let e = optimize(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with("not a valid SVG file"), "{bad}: {e}");
        }
        assert!(optimize(b"\xff\xfe<svg/>").is_err());
    }
}
