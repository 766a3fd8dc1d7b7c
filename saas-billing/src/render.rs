//! Invoices and credit notes as documents a customer reads: a self-contained
//! HTML page and an A4 PDF, plus the choice between them and JSON from an
//! `Accept` header or a path suffix.
//!
//! Both renderings are built from one view of the invoice (title, status,
//! parties, details, lines, totals), so they always say the same thing. The
//! HTML has inline CSS only (no scripts, no external resources) and escapes
//! every text that comes from the invoice. The PDF uses the standard
//! Helvetica fonts with `WinAnsiEncoding`, so nothing is embedded; characters
//! outside that encoding print as `?`. Its content streams are left
//! uncompressed: invoices are small and stay inspectable.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use crate::error::BillingError;
use crate::invoice::{DocumentKind, Invoice, InvoiceStatus, Party};
use crate::money::{Currency, minor_to_decimal};
use crate::rating::InvoiceLine;

/// A representation of an invoice that the API can return.
///
/// ```
/// use saas_billing::render::Format;
///
/// let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
/// assert_eq!(Format::from_accept(browser), Some(Format::Html));
/// assert_eq!(Format::from_suffix("pdf"), Some(Format::Pdf));
/// assert_eq!(Format::Pdf.content_type(), "application/pdf");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The invoice as JSON data (the API's default).
    Json,
    /// A printable HTML page, see [`to_html`].
    Html,
    /// An A4 PDF document, see [`to_pdf`].
    Pdf,
}

impl Format {
    /// The format an `Accept` header asks for, or `None` when it accepts none
    /// of them (answer 406).
    ///
    /// Understands `application/json`, `text/html` (and
    /// `application/xhtml+xml`), `application/pdf` and the wildcards `*/*`
    /// and `application/*` (both JSON) and `text/*` (HTML). The media type
    /// with the highest `q` wins, the first listed among equals; `q=0` means
    /// "not this one" and a malformed `q` counts as 1. An empty header
    /// accepts nothing: treat a missing header as `*/*` before calling this.
    #[must_use]
    pub fn from_accept(accept: &str) -> Option<Format> {
        let mut best: Option<(Format, f32)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let Some(format) = Self::from_media_type(&media) else {
                continue;
            };
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .filter(|q| q.is_finite())
                .map_or(1.0, |q| q.clamp(0.0, 1.0));
            if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((format, q));
            }
        }
        best.map(|(format, _)| format)
    }

    fn from_media_type(media: &str) -> Option<Format> {
        match media {
            "application/json" | "application/*" | "*/*" => Some(Self::Json),
            "text/html" | "application/xhtml+xml" | "text/*" => Some(Self::Html),
            "application/pdf" => Some(Self::Pdf),
            _ => None,
        }
    }

    /// The format a path suffix names (`/invoices/{id}.pdf`): `json`, `html`
    /// or `pdf`, in any case, without the dot.
    #[must_use]
    pub fn from_suffix(s: &str) -> Option<Format> {
        [Self::Json, Self::Html, Self::Pdf]
            .into_iter()
            .find(|f| f.suffix().eq_ignore_ascii_case(s))
    }

    /// The suffix naming the format: `json`, `html` or `pdf`.
    #[must_use]
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Html => "html",
            Self::Pdf => "pdf",
        }
    }

    /// The `Content-Type` of a response in this format.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Html => "text/html; charset=utf-8",
            Self::Pdf => "application/pdf",
        }
    }
}

// ---------------------------------------------------------------------------
// The view both renderings are made from.

/// What a document says, as display text.
struct View {
    title: String,
    status: Status,
    seller: PartyView,
    buyer: PartyView,
    details: Vec<(&'static str, String)>,
    rows: Vec<Row>,
    totals: Vec<Total>,
    currency: Currency,
}

/// The status stamp and what explains it.
struct Status {
    label: &'static str,
    class: &'static str,
    notes: Vec<String>,
}

struct PartyView {
    heading: &'static str,
    name: String,
    address: Vec<String>,
    extra: Vec<String>,
}

struct Row {
    description: String,
    period: String,
    quantity: String,
    amount: String,
}

struct Total {
    label: String,
    amount: String,
    strong: bool,
}

fn view(invoice: &Invoice) -> View {
    let what = match invoice.kind {
        DocumentKind::Invoice => "invoice",
        DocumentKind::CreditNote => "credit note",
    };
    let title = match (invoice.status, &invoice.number) {
        (InvoiceStatus::Draft, _) => format!("Draft {what}"),
        (_, Some(number)) => format!("{} {number}", capitalised(what)),
        (_, None) => capitalised(what),
    };
    let mut details = Vec::new();
    match invoice.issued_at {
        Some(at) => details.push(("Issue date", date(at))),
        None => details.push(("Drafted", date(invoice.created_at))),
    }
    if let Some(at) = invoice.due_at {
        details.push(("Due date", date(at)));
    }
    if let (Some(start), Some(end)) = (invoice.period_start, invoice.period_end) {
        details.push(("Period", span(start, end)));
    }
    if let Some(po) = &invoice.po_number {
        details.push(("PO number", one_line(po)));
    }
    let c = invoice.currency;
    let mut totals = vec![
        Total::new("Subtotal".to_owned(), invoice.subtotal, c, false),
        Total::new(
            format!("Tax ({}%)", invoice.tax_rate.normalize()),
            invoice.tax,
            c,
            false,
        ),
    ];
    if invoice.credits_applied != 0 {
        totals.push(Total::new(
            "Credits applied".to_owned(),
            invoice.credits_applied.saturating_neg(),
            c,
            false,
        ));
    }
    totals.push(Total::new("Total".to_owned(), invoice.total, c, true));
    totals.push(Total::new(
        "Amount due".to_owned(),
        invoice.amount_due,
        c,
        true,
    ));
    View {
        title,
        status: status(invoice, what),
        seller: party("From", &invoice.seller, false),
        buyer: party("Bill to", &invoice.buyer, true),
        details,
        rows: invoice.lines.iter().map(|l| row(l, c)).collect(),
        totals,
        currency: c,
    }
}

fn status(invoice: &Invoice, what: &str) -> Status {
    let mut notes = Vec::new();
    let (label, class) = match invoice.status {
        InvoiceStatus::Draft => {
            notes.push(format!("This is a draft, not a valid {what}."));
            ("DRAFT", "draft")
        }
        InvoiceStatus::Finalized if invoice.overdue => {
            if let Some(due) = invoice.due_at {
                notes.push(format!("Payment was due on {}.", date(due)));
            }
            ("OVERDUE", "overdue")
        }
        InvoiceStatus::Finalized => {
            if let Some(due) = invoice.due_at {
                notes.push(format!("Payment is due by {}.", date(due)));
            }
            ("OPEN", "open")
        }
        InvoiceStatus::Paid => {
            if let Some(at) = invoice.paid_at {
                notes.push(format!("Paid on {}.", date(at)));
            }
            if let Some(reference) = &invoice.payment_reference {
                notes.push(format!("Payment reference: {}", one_line(reference)));
            }
            ("PAID", "paid")
        }
        InvoiceStatus::Void => {
            if let Some(at) = invoice.voided_at {
                notes.push(format!("Voided on {}.", date(at)));
            }
            if let Some(reason) = &invoice.void_reason {
                notes.push(format!("Reason: {}", one_line(reason)));
            }
            ("VOID", "void")
        }
    };
    Status {
        label,
        class,
        notes,
    }
}

fn party(heading: &'static str, p: &Party, with_email: bool) -> PartyView {
    let address = p
        .address
        .as_deref()
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let mut extra = Vec::new();
    if let Some(tax_id) = &p.tax_id {
        extra.push(format!("Tax id: {}", one_line(tax_id)));
    }
    if with_email && let Some(email) = &p.email {
        extra.push(format!("Email: {}", one_line(email)));
    }
    PartyView {
        heading,
        name: one_line(&p.name),
        address,
        extra,
    }
}

fn row(line: &InvoiceLine, currency: Currency) -> Row {
    Row {
        description: one_line(&line.description),
        period: span(line.period_start, line.period_end),
        quantity: line.quantity.normalize().to_string(),
        amount: money(line.amount, currency),
    }
}

impl Total {
    fn new(label: String, amount: i64, currency: Currency, strong: bool) -> Self {
        Self {
            label,
            amount: money(amount, currency),
            strong,
        }
    }
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// `1234.50 EUR`, `-12.00 EUR`, `1000 JPY`.
fn money(amount: i64, currency: Currency) -> String {
    format!("{} {currency}", minor_to_decimal(amount, currency))
}

fn date(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// A `[start, end)` span as the dates a reader expects: the last day shown is
/// the one before `end` when `end` is a midnight.
fn span(start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    let first = start.date_naive();
    let last: NaiveDate = end
        .checked_sub_signed(TimeDelta::nanoseconds(1))
        .map_or(first, |t| t.date_naive())
        .max(first);
    if first == last {
        first.format("%Y-%m-%d").to_string()
    } else {
        format!(
            "{} \u{2013} {}",
            first.format("%Y-%m-%d"),
            last.format("%Y-%m-%d")
        )
    }
}

/// Collapses line breaks and other control characters into spaces.
fn one_line(s: &str) -> String {
    s.split(char::is_control)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// HTML.

/// Escapes `s` for HTML text and attribute values: `&`, `<`, `>`, `"`, `'`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const CSS: &str = "\
@page { size: A4; margin: 18mm 16mm; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f4f5; color: #18181b; font: 14px/1.45 -apple-system, \"Segoe UI\", Helvetica, Arial, sans-serif; }
main { max-width: 210mm; margin: 24px auto; padding: 40px 48px; background: #fff; }
header { display: flex; justify-content: space-between; align-items: baseline; gap: 16px; flex-wrap: wrap; }
h1 { margin: 0; font-size: 26px; }
h2 { margin: 0 0 4px; font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: #71717a; }
.status { font-weight: 700; letter-spacing: .08em; padding: 2px 10px; border: 2px solid currentColor; border-radius: 4px; }
.status.paid { color: #15803d; } .status.void { color: #b91c1c; } .status.overdue { color: #b45309; }
.status.draft { color: #52525b; } .status.open { color: #1d4ed8; }
.notes { margin: 8px 0 0; color: #3f3f46; }
.notes p { margin: 0; }
.parties { display: flex; gap: 32px; margin: 28px 0 20px; }
.party { flex: 1; }
.party p { margin: 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0 0 24px; }
dt { color: #71717a; } dd { margin: 0; }
table { width: 100%; border-collapse: collapse; }
th, td { padding: 6px 8px; text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid #18181b; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
tbody td { border-bottom: 1px solid #e4e4e7; }
.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tfoot th { text-align: right; font-weight: 400; }
tfoot tr.strong th, tfoot tr.strong td { font-weight: 700; }
tfoot tr:first-child th, tfoot tr:first-child td { padding-top: 12px; }
@media print { body { background: #fff; } main { margin: 0; padding: 0; max-width: none; } }
";

/// The invoice as a complete, self-contained HTML5 document for a customer to
/// read and print: inline CSS, no scripts, no external resources, every text
/// from the invoice escaped.
#[must_use]
pub fn to_html(invoice: &Invoice) -> String {
    let v = view(invoice);
    let mut h = String::with_capacity(8 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" \
         content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
    );
    h.push_str(&format!("<title>{}</title>\n", escape(&v.title)));
    h.push_str("<style>\n");
    h.push_str(CSS);
    h.push_str("</style>\n</head>\n<body>\n<main>\n<header>\n");
    h.push_str(&format!("<h1>{}</h1>\n", escape(&v.title)));
    h.push_str(&format!(
        "<span class=\"status {}\">{}</span>\n</header>\n",
        v.status.class, v.status.label
    ));
    if !v.status.notes.is_empty() {
        h.push_str("<div class=\"notes\">\n");
        for note in &v.status.notes {
            h.push_str(&format!("<p>{}</p>\n", escape(note)));
        }
        h.push_str("</div>\n");
    }

    h.push_str("<section class=\"parties\">\n");
    for p in [&v.seller, &v.buyer] {
        h.push_str(&format!(
            "<div class=\"party\">\n<h2>{}</h2>\n<p><strong>{}</strong>",
            p.heading,
            escape(&p.name)
        ));
        for line in p.address.iter().chain(&p.extra) {
            h.push_str(&format!("<br>\n{}", escape(line)));
        }
        h.push_str("</p>\n</div>\n");
    }
    h.push_str("</section>\n<dl>\n");
    for (label, value) in &v.details {
        h.push_str(&format!("<dt>{label}</dt><dd>{}</dd>\n", escape(value)));
    }
    h.push_str("</dl>\n");

    h.push_str(
        "<table>\n<thead><tr><th>Description</th><th>Period</th>\
         <th class=\"num\">Quantity</th><th class=\"num\">Amount</th></tr></thead>\n<tbody>\n",
    );
    for r in &v.rows {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\n",
            escape(&r.description),
            escape(&r.period),
            escape(&r.quantity),
            escape(&r.amount),
        ));
    }
    if v.rows.is_empty() {
        h.push_str("<tr><td colspan=\"4\">No lines.</td></tr>\n");
    }
    h.push_str("</tbody>\n<tfoot>\n");
    for t in &v.totals {
        h.push_str(&format!(
            "<tr{}><th colspan=\"3\">{}</th><td class=\"num\">{}</td></tr>\n",
            if t.strong { " class=\"strong\"" } else { "" },
            escape(&t.label),
            escape(&t.amount),
        ));
    }
    h.push_str(&format!(
        "</tfoot>\n</table>\n<p class=\"notes\">All amounts in {}.</p>\n</main>\n</body>\n</html>\n",
        v.currency
    ));
    h
}

// ---------------------------------------------------------------------------
// PDF.

/// A4 in points.
const PAGE_WIDTH: f32 = 595.28;
const PAGE_HEIGHT: f32 = 841.89;
const LEFT: f32 = 50.0;
const RIGHT: f32 = 545.0;
/// Where the running header's baseline sits.
const HEADER_BASELINE: f32 = 805.0;
/// The top of the body, below the running header.
const TOP: f32 = 780.0;
const BOTTOM: f32 = 50.0;

/// Table columns: where the description and period start, and where the
/// right-aligned quantity and amount numbers end (the currency code follows
/// the amount).
const COL_PERIOD: f32 = 285.0;
const COL_QUANTITY_END: f32 = 440.0;
const COL_AMOUNT_END: f32 = 515.0;
const COL_CURRENCY: f32 = 519.0;
/// The right column of the party blocks.
const COL_BUYER: f32 = 310.0;

const BODY: f32 = 9.5;
const LEADING: f32 = 13.0;

#[derive(Debug, Clone, Copy)]
enum Face {
    Regular,
    Bold,
}

impl Face {
    fn resource(self) -> Name<'static> {
        match self {
            Self::Regular => Name(b"F1"),
            Self::Bold => Name(b"F2"),
        }
    }
}

/// Something drawn on a page.
enum Mark {
    Text {
        x: f32,
        y: f32,
        face: Face,
        size: f32,
        text: Vec<u8>,
    },
    Rule {
        y: f32,
        width: f32,
    },
}

/// Lays marks out top to bottom, starting a new page when one is full.
struct Sheet {
    pages: Vec<Vec<Mark>>,
    current: Vec<Mark>,
    y: f32,
    /// Inside the table of lines: a new page repeats its header.
    in_table: bool,
    /// Where the body of the current page starts (below a repeated table
    /// header): nothing is drawn on the page yet while `y` is there.
    fresh: f32,
}

impl Sheet {
    fn new() -> Self {
        Self {
            pages: Vec::new(),
            current: Vec::new(),
            y: TOP,
            in_table: false,
            fresh: TOP,
        }
    }

    fn new_page(&mut self) {
        self.pages.push(std::mem::take(&mut self.current));
        self.y = TOP;
        if self.in_table {
            self.table_header();
        }
        self.fresh = self.y;
    }

    /// Starts a new page unless `height` fits on this one, so that what
    /// follows stays together (unless it is taller than a page).
    fn keep(&mut self, height: f32) {
        if self.y - height < BOTTOM && self.y < self.fresh {
            self.new_page();
        }
    }

    /// Takes `height` off the page for one line and returns its baseline.
    fn line(&mut self, height: f32) -> f32 {
        if self.y - height < BOTTOM {
            self.new_page();
        }
        self.y -= height;
        self.y + height * 0.25
    }

    fn gap(&mut self, height: f32) {
        self.y -= height;
    }

    fn text(&mut self, x: f32, y: f32, face: Face, size: f32, text: &str) {
        self.current.push(Mark::Text {
            x,
            y,
            face,
            size,
            text: win_ansi(text),
        });
    }

    /// A number ending at `right`.
    fn number(&mut self, right: f32, y: f32, face: Face, size: f32, text: &str) {
        self.text(right - width(text, face, size), y, face, size, text);
    }

    /// An amount: its number ends at [`COL_AMOUNT_END`], the currency code
    /// follows.
    fn amount(&mut self, y: f32, face: Face, size: f32, text: &str) {
        let (number, code) = text.rsplit_once(' ').unwrap_or((text, ""));
        self.number(COL_AMOUNT_END, y, face, size, number);
        self.text(COL_CURRENCY, y, face, size, code);
    }

    fn rule(&mut self, width: f32) {
        self.current.push(Mark::Rule { y: self.y, width });
    }

    fn table_header(&mut self) {
        let y = self.line(LEADING + 2.0);
        self.text(LEFT, y, Face::Bold, BODY, "Description");
        self.text(COL_PERIOD, y, Face::Bold, BODY, "Period");
        self.number(COL_QUANTITY_END, y, Face::Bold, BODY, "Quantity");
        self.number(COL_AMOUNT_END, y, Face::Bold, BODY, "Amount");
        self.gap(2.0);
        self.rule(1.0);
        self.gap(4.0);
    }

    fn finish(mut self) -> Vec<Vec<Mark>> {
        self.pages.push(self.current);
        self.pages
    }
}

/// The width of `text` in points: exact for numbers (Helvetica's and
/// Helvetica-Bold's digits are all 556/1000 em wide, the point and comma 278,
/// the minus 333), a little generous for words, so that an estimate never
/// runs into the next column.
fn width(text: &str, face: Face, size: f32) -> f32 {
    let bold = match face {
        Face::Regular => 1.0,
        Face::Bold => 1.1,
    };
    let units: f32 = text
        .chars()
        .map(|c| match c {
            '0'..='9' => 556.0,
            '.' | ',' | ' ' | ':' | ';' => 278.0,
            '-' | '(' | ')' => 333.0,
            'i' | 'j' | 'l' => 222.0 * bold,
            'f' | 'r' | 't' => 333.0 * bold,
            'm' => 833.0 * bold,
            'w' => 722.0 * bold,
            'a'..='z' => 556.0 * bold,
            'I' => 278.0 * bold,
            'J' => 500.0 * bold,
            'M' => 833.0 * bold,
            'W' => 944.0 * bold,
            'A'..='Z' => 722.0 * bold,
            '@' => 1015.0,
            _ => 722.0 * bold,
        })
        .sum();
    units * size / 1000.0
}

/// Greedy word wrap of `text` to lines at most `max` points wide; a word
/// longer than a line is cut.
fn wrap(text: &str, max: f32, face: Face, size: f32) -> Vec<String> {
    let fits = |s: &str| width(s, face, size) <= max;
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let joined = if line.is_empty() {
            word.to_owned()
        } else {
            format!("{line} {word}")
        };
        if fits(&joined) {
            line = joined;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        // The word alone, cut into pieces that fit (at least one character
        // each, however narrow the column).
        for c in word.chars() {
            line.push(c);
            if !fits(&line) && line.chars().count() > 1 {
                line.pop();
                lines.push(std::mem::replace(&mut line, c.to_string()));
            }
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// `text` in WinAnsiEncoding (Windows-1252), the encoding of the standard
/// fonts here: Latin-1 and the typographic extras of 0x80-0x9F; anything
/// else becomes `?`, control characters a space.
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' | '\u{a0}'..='\u{ff}' => u8::try_from(c).unwrap_or(b'?'),
            c if c.is_control() => b' ',
            '€' => 0x80,
            '‚' => 0x82,
            'ƒ' => 0x83,
            '„' => 0x84,
            '…' => 0x85,
            '†' => 0x86,
            '‡' => 0x87,
            'ˆ' => 0x88,
            '‰' => 0x89,
            'Š' => 0x8a,
            '‹' => 0x8b,
            'Œ' => 0x8c,
            'Ž' => 0x8e,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            '˜' => 0x98,
            '™' => 0x99,
            'š' => 0x9a,
            '›' => 0x9b,
            'œ' => 0x9c,
            'ž' => 0x9e,
            'Ÿ' => 0x9f,
            _ => b'?',
        })
        .collect()
}

fn lay_out(v: &View) -> Vec<Vec<Mark>> {
    let mut s = Sheet::new();

    let y = s.line(26.0);
    s.text(LEFT, y, Face::Bold, 20.0, &v.title);
    s.gap(4.0);
    let y = s.line(16.0);
    s.text(LEFT, y, Face::Bold, 12.0, v.status.label);
    for note in &v.status.notes {
        for part in wrap(note, RIGHT - LEFT, Face::Regular, BODY) {
            let y = s.line(LEADING);
            s.text(LEFT, y, Face::Regular, BODY, &part);
        }
    }
    s.gap(14.0);

    // The parties side by side, row by row.
    let column = COL_BUYER - LEFT - 15.0;
    let block = |p: &PartyView| {
        let mut lines = vec![(Face::Bold, p.heading.to_owned())];
        lines.extend(
            wrap(&p.name, column, Face::Bold, BODY)
                .into_iter()
                .map(|l| (Face::Bold, l)),
        );
        for line in p.address.iter().chain(&p.extra) {
            lines.extend(
                wrap(line, column, Face::Regular, BODY)
                    .into_iter()
                    .map(|l| (Face::Regular, l)),
            );
        }
        lines
    };
    let (seller, buyer) = (block(&v.seller), block(&v.buyer));
    for i in 0..seller.len().max(buyer.len()) {
        let y = s.line(LEADING);
        if let Some((face, text)) = seller.get(i) {
            s.text(LEFT, y, *face, BODY, text);
        }
        if let Some((face, text)) = buyer.get(i) {
            s.text(COL_BUYER, y, *face, BODY, text);
        }
    }
    s.gap(14.0);

    for (label, value) in &v.details {
        for (i, part) in wrap(value, RIGHT - LEFT - 90.0, Face::Regular, BODY)
            .iter()
            .enumerate()
        {
            let y = s.line(LEADING);
            if i == 0 {
                s.text(LEFT, y, Face::Bold, BODY, label);
            }
            s.text(LEFT + 90.0, y, Face::Regular, BODY, part);
        }
    }
    s.gap(16.0);

    // The table's header stays with its first line.
    s.keep(LEADING * 3.0);
    s.table_header();
    s.in_table = true;
    for r in &v.rows {
        let parts = wrap(
            &r.description,
            COL_PERIOD - LEFT - 10.0,
            Face::Regular,
            BODY,
        );
        s.keep(LEADING * parts.len() as f32);
        for (i, part) in parts.iter().enumerate() {
            let y = s.line(LEADING);
            s.text(LEFT, y, Face::Regular, BODY, part);
            if i == 0 {
                s.text(COL_PERIOD, y, Face::Regular, BODY, &r.period);
                s.number(COL_QUANTITY_END, y, Face::Regular, BODY, &r.quantity);
                s.amount(y, Face::Regular, BODY, &r.amount);
            }
        }
        s.gap(3.0);
    }
    if v.rows.is_empty() {
        let y = s.line(LEADING);
        s.text(LEFT, y, Face::Regular, BODY, "No lines.");
    }
    s.in_table = false;
    s.rule(0.5);
    s.gap(6.0);

    s.keep((LEADING + 1.0) * v.totals.len() as f32);
    for t in &v.totals {
        let face = if t.strong { Face::Bold } else { Face::Regular };
        let y = s.line(LEADING + 1.0);
        s.text(COL_PERIOD + 40.0, y, face, BODY, &t.label);
        s.amount(y, face, BODY, &t.amount);
    }
    s.finish()
}

/// The invoice as a PDF: A4 pages with the same content as [`to_html`], in
/// the standard Helvetica fonts (nothing embedded). Long invoices run over
/// several pages, each with a running header naming the document and the
/// page. Text outside WinAnsiEncoding (Windows-1252) prints as `?`.
///
/// # Errors
///
/// [`BillingError::Catalogue`] if the document would need more PDF objects
/// than a PDF can number (not reachable with a real invoice).
pub fn to_pdf(invoice: &Invoice) -> Result<Vec<u8>, BillingError> {
    let v = view(invoice);
    let pages = lay_out(&v);
    let too_big = || BillingError::Catalogue("the invoice is too long for a pdf".to_owned());
    let page_count = i32::try_from(pages.len()).map_err(|_| too_big())?;

    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    // Each page takes two ids, its page object and its content stream.
    let ids = (0..page_count)
        .map(|i| {
            let page = i.checked_mul(2).and_then(|n| n.checked_add(6));
            let content = page.and_then(|n| n.checked_add(1));
            page.zip(content).map(|(p, c)| (Ref::new(p), Ref::new(c)))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(too_big)?;

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(ids.iter().map(|(page, _)| *page))
        .count(page_count);
    for (id, name) in [(regular, "Helvetica"), (bold, "Helvetica-Bold")] {
        pdf.type1_font(id)
            .base_font(Name(name.as_bytes()))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    pdf.document_info(info)
        .title(TextStr(&v.title))
        .producer(TextStr("saas-billing"));

    for (number, (marks, (page_id, content_id))) in pages.iter().zip(&ids).enumerate() {
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT));
        page.parent(tree);
        page.contents(*content_id);
        page.resources()
            .fonts()
            .pair(Face::Regular.resource(), regular)
            .pair(Face::Bold.resource(), bold);
        page.finish();

        let mut content = Content::new();
        let header = format!(
            "{}  \u{2013}  page {} of {}",
            v.title,
            number.saturating_add(1),
            pages.len()
        );
        draw_text(
            &mut content,
            LEFT,
            HEADER_BASELINE,
            Face::Regular,
            8.0,
            &win_ansi(&header),
        );
        draw_rule(&mut content, HEADER_BASELINE - 6.0, 0.5);
        for mark in marks {
            match mark {
                Mark::Text {
                    x,
                    y,
                    face,
                    size,
                    text,
                } => draw_text(&mut content, *x, *y, *face, *size, text),
                Mark::Rule { y, width } => draw_rule(&mut content, *y, *width),
            }
        }
        pdf.stream(*content_id, &content.finish());
    }
    Ok(pdf.finish())
}

fn draw_text(content: &mut Content, x: f32, y: f32, face: Face, size: f32, text: &[u8]) {
    content
        .begin_text()
        .set_font(face.resource(), size)
        .next_line(x, y)
        .show(Str(text))
        .end_text();
}

fn draw_rule(content: &mut Content, y: f32, width: f32) {
    content
        .set_line_width(width)
        .move_to(LEFT, y)
        .line_to(RIGHT, y)
        .stroke();
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rust_decimal::Decimal;
    use saas_core::InvoiceId;

    use crate::rating::LineKind;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    fn line(description: &str, amount: i64) -> InvoiceLine {
        InvoiceLine {
            charge_code: "platform".to_owned(),
            description: description.to_owned(),
            quantity: Decimal::new(20, 0),
            amount,
            period_start: at(2026, 4, 1),
            period_end: at(2026, 5, 1),
            kind: LineKind::Fixed,
        }
    }

    /// A paid-up, finalized April invoice: 123450 + 19 % tax - 5000 credit.
    fn invoice() -> Invoice {
        Invoice {
            id: InvoiceId::new(),
            kind: DocumentKind::Invoice,
            number: Some("INV-000042".to_owned()),
            status: InvoiceStatus::Finalized,
            overdue: false,
            reason: "period".to_owned(),
            subscription_id: None,
            corrects_id: None,
            currency: "EUR".parse().unwrap(),
            tax_rate: Decimal::new(19, 0),
            lines: vec![line("Team plan", 100_000), line("Seats", 23_450)],
            subtotal: 123_450,
            tax: 23_456,
            credits_applied: 5_000,
            total: 141_906,
            amount_due: 141_906,
            period_start: Some(at(2026, 4, 1)),
            period_end: Some(at(2026, 5, 1)),
            po_number: Some("PO-7781".to_owned()),
            seller: Party {
                name: "Example Software GmbH".to_owned(),
                address: Some("Hauptstraße 1\n10115 Berlin\nGermany".to_owned()),
                tax_id: Some("DE123456789".to_owned()),
                email: None,
            },
            buyer: Party {
                name: "Acme Ltd".to_owned(),
                address: Some("1 Main Street\nLondon".to_owned()),
                tax_id: Some("GB999999973".to_owned()),
                email: Some("billing@acme.example".to_owned()),
            },
            created_at: at(2026, 5, 1),
            issued_at: Some(at(2026, 5, 1)),
            due_at: Some(at(2026, 5, 15)),
            paid_at: None,
            payment_reference: None,
            voided_at: None,
            void_reason: None,
        }
    }

    /// The bytes of every string shown by the PDF's content streams (literal
    /// or hex), one entry per string.
    fn shown_strings(pdf: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = pdf;
        while let Some(start) = find(rest, b"stream\n") {
            let body = &rest[start + b"stream\n".len()..];
            let end = find(body, b"endstream").unwrap();
            // Skip "endstream" itself being matched as "stream".
            if start >= 3 && &rest[start - 3..start] == b"end" {
                rest = &rest[start + 1..];
                continue;
            }
            out.extend(strings_in(&body[..end]));
            rest = &body[end + b"endstream".len()..];
        }
        out
    }

    fn strings_in(content: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < content.len() {
            match content[i] {
                b'(' => {
                    let mut s = Vec::new();
                    let mut depth = 1;
                    i += 1;
                    while depth > 0 {
                        match content[i] {
                            b'\\' => {
                                i += 1;
                                match content[i] {
                                    b'n' => s.push(b'\n'),
                                    b'r' => s.push(b'\r'),
                                    b't' => s.push(b'\t'),
                                    b'0'..=b'7' => {
                                        let digits = content[i..]
                                            .iter()
                                            .take(3)
                                            .take_while(|b| b.is_ascii_digit())
                                            .count();
                                        let octal =
                                            std::str::from_utf8(&content[i..i + digits]).unwrap();
                                        s.push(u8::from_str_radix(octal, 8).unwrap());
                                        i += digits - 1;
                                    }
                                    other => s.push(other),
                                }
                            }
                            b'(' => {
                                depth += 1;
                                s.push(b'(');
                            }
                            b')' => {
                                depth -= 1;
                                if depth > 0 {
                                    s.push(b')');
                                }
                            }
                            b => s.push(b),
                        }
                        i += 1;
                    }
                    out.push(s);
                }
                b'<' if content.get(i + 1) != Some(&b'<') => {
                    let end = i + content[i..].iter().position(|&b| b == b'>').unwrap();
                    let hex: Vec<u8> = content[i + 1..end]
                        .iter()
                        .copied()
                        .filter(|b| !b.is_ascii_whitespace())
                        .collect();
                    let bytes = hex
                        .chunks(2)
                        .map(|pair| {
                            let digits = std::str::from_utf8(pair).unwrap();
                            u8::from_str_radix(&format!("{digits:0<2}"), 16).unwrap()
                        })
                        .collect();
                    out.push(bytes);
                    i = end + 1;
                }
                b'<' => i += 2,
                _ => i += 1,
            }
        }
        out
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    fn count(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    }

    fn shows(pdf: &[u8], text: &[u8]) -> bool {
        shown_strings(pdf).iter().any(|s| find(s, text).is_some())
    }

    fn page_count(pdf: &[u8]) -> usize {
        count(pdf, b"/Type /Page") - count(pdf, b"/Type /Pages")
    }

    #[test]
    fn escape_replaces_every_html_special_character() {
        assert_eq!(
            escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("Zürich 東京"), "Zürich 東京");
    }

    #[test]
    fn html_escapes_hostile_text_from_the_invoice() {
        let mut inv = invoice();
        inv.buyer.name = r#"<script>alert(1)</script> & "Co""#.to_owned();
        inv.buyer.address = Some("<img src=x onerror=alert(2)>\n'quoted'".to_owned());
        inv.lines[0].description = "<b>bold</b>".to_owned();
        inv.po_number = Some("</title><script>".to_owned());
        let html = to_html(&inv);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"));
        assert!(!html.contains("<b>bold"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Co&quot;"));
        assert!(html.contains("&#39;quoted&#39;"));
        assert!(html.contains("&lt;/title&gt;&lt;script&gt;"));
    }

    #[test]
    fn html_is_a_self_contained_document_without_scripts() {
        let html = to_html(&invoice());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        assert!(html.contains("<style>"));
        for forbidden in ["<script", "<link", "src=", "href=", "@import", "url("] {
            assert!(!html.contains(forbidden), "{forbidden}");
        }
    }

    #[test]
    fn html_shows_number_parties_dates_lines_and_totals() {
        let html = to_html(&invoice());
        for expected in [
            "<title>Invoice INV-000042</title>",
            "<h1>Invoice INV-000042</h1>",
            "Example Software GmbH",
            "Hauptstraße 1<br>\n10115 Berlin",
            "Tax id: DE123456789",
            "Acme Ltd",
            "Email: billing@acme.example",
            "<dt>Issue date</dt><dd>2026-05-01</dd>",
            "<dt>Due date</dt><dd>2026-05-15</dd>",
            "<dt>Period</dt><dd>2026-04-01 \u{2013} 2026-04-30</dd>",
            "<dt>PO number</dt><dd>PO-7781</dd>",
            "Team plan",
            "1000.00 EUR",
            "234.50 EUR",
            "Subtotal",
            "1234.50 EUR",
            "Tax (19%)",
            "234.56 EUR",
            "Credits applied",
            "-50.00 EUR",
            "1419.06 EUR",
            "Amount due",
            "OPEN",
        ] {
            assert!(html.contains(expected), "missing {expected:?} in\n{html}");
        }
    }

    #[test]
    fn amounts_use_the_currency_minor_units() {
        let eur: Currency = "EUR".parse().unwrap();
        assert_eq!(money(123_450, eur), "1234.50 EUR");
        assert_eq!(money(-1_200, eur), "-12.00 EUR");
        assert_eq!(money(0, eur), "0.00 EUR");
        assert_eq!(money(1_000, "JPY".parse().unwrap()), "1000 JPY");
        assert_eq!(money(1_235, "KWD".parse().unwrap()), "1.235 KWD");
    }

    #[test]
    fn a_draft_is_marked_draft_and_has_no_number() {
        let mut inv = invoice();
        inv.status = InvoiceStatus::Draft;
        inv.number = None;
        inv.issued_at = None;
        inv.due_at = None;
        let html = to_html(&inv);
        assert!(html.contains("<h1>Draft invoice</h1>"));
        assert!(html.contains("DRAFT"));
        assert!(html.contains("<dt>Drafted</dt>"));
        let pdf = to_pdf(&inv).unwrap();
        assert!(shows(&pdf, b"Draft invoice"));
    }

    #[test]
    fn a_credit_note_is_titled_as_one() {
        let mut inv = invoice();
        inv.kind = DocumentKind::CreditNote;
        inv.number = Some("CN-000003".to_owned());
        assert!(to_html(&inv).contains("<h1>Credit note CN-000003</h1>"));
        inv.status = InvoiceStatus::Draft;
        assert!(to_html(&inv).contains("<h1>Draft credit note</h1>"));
    }

    #[test]
    fn a_void_invoice_shows_void_and_its_reason() {
        let mut inv = invoice();
        inv.status = InvoiceStatus::Void;
        inv.voided_at = Some(at(2026, 5, 3));
        inv.void_reason = Some("issued to the wrong <entity>".to_owned());
        let html = to_html(&inv);
        assert!(html.contains(">VOID<"));
        assert!(html.contains("Reason: issued to the wrong &lt;entity&gt;"));
        assert!(html.contains("Voided on 2026-05-03."));
        let pdf = to_pdf(&inv).unwrap();
        assert!(shows(&pdf, b"VOID"));
        assert!(shows(&pdf, b"Reason: issued to the wrong <entity>"));
    }

    #[test]
    fn a_paid_invoice_shows_paid_and_the_payment_reference() {
        let mut inv = invoice();
        inv.status = InvoiceStatus::Paid;
        inv.amount_due = 0;
        inv.paid_at = Some(at(2026, 5, 9));
        inv.payment_reference = Some("SEPA-2026-0509-17".to_owned());
        let html = to_html(&inv);
        assert!(html.contains(">PAID<"));
        assert!(html.contains("Paid on 2026-05-09."));
        assert!(html.contains("Payment reference: SEPA-2026-0509-17"));
    }

    #[test]
    fn an_overdue_invoice_says_so() {
        let mut inv = invoice();
        inv.overdue = true;
        let html = to_html(&inv);
        assert!(html.contains(">OVERDUE<"));
        assert!(html.contains("Payment was due on 2026-05-15."));
    }

    #[test]
    fn pdf_is_a_complete_document_whose_content_shows_the_invoice() {
        let pdf = to_pdf(&invoice()).unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
        assert!(pdf.trim_ascii_end().ends_with(b"%%EOF"));
        assert!(find(&pdf, b"/BaseFont /Helvetica").is_some());
        assert!(find(&pdf, b"/WinAnsiEncoding").is_some());
        assert!(find(&pdf, b"/FlateDecode").is_none());
        assert_eq!(page_count(&pdf), 1);
        for text in [
            &b"Invoice INV-000042"[..],
            b"Acme Ltd",
            b"Hauptstra\xdfe 1",
            b"Due date",
            b"2026-05-15",
            b"Team plan",
            b"1419.06",
            b"Tax (19%)",
        ] {
            assert!(shows(&pdf, text), "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn a_long_invoice_runs_over_several_pages_each_with_a_header() {
        let mut inv = invoice();
        inv.lines = (0..200)
            .map(|i| line(&format!("Usage item {i}"), 100))
            .collect();
        let pdf = to_pdf(&inv).unwrap();
        let pages = page_count(&pdf);
        assert!(pages > 1, "{pages} pages");
        assert!(find(&pdf, format!("/Count {pages}").as_bytes()).is_some());
        for n in 1..=pages {
            let header = format!("Invoice INV-000042  \u{2013}  page {n} of {pages}");
            assert!(shows(&pdf, &win_ansi(&header)), "{header}");
        }
        // Every line is there, and the table header repeats on each page.
        assert!(shows(&pdf, b"Usage item 0"));
        assert!(shows(&pdf, b"Usage item 199"));
        let headers = shown_strings(&pdf)
            .iter()
            .filter(|s| s.as_slice() == b"Description")
            .count();
        assert_eq!(headers, pages);
    }

    #[test]
    fn text_outside_win_ansi_becomes_question_marks_without_panicking() {
        assert_eq!(win_ansi("Zürich"), b"Z\xfcrich");
        assert_eq!(win_ansi("東京"), b"??");
        assert_eq!(win_ansi("5 € – “ok”"), b"5 \x80 \x96 \x93ok\x94");
        assert_eq!(win_ansi("a\tb\u{0}"), b"a b ");
        let mut inv = invoice();
        inv.buyer.name = "東京 Zürich KK 🦀".to_owned();
        inv.lines[0].description = "Ünïcödé 東京".repeat(40);
        let pdf = to_pdf(&inv).unwrap();
        assert!(shows(&pdf, b"?? Z\xfcrich KK ?"));
        assert!(to_html(&inv).contains("東京 Zürich KK 🦀"));
    }

    #[test]
    fn long_words_and_descriptions_are_wrapped() {
        // Digits are 556/1000 em: four of them at 10 pt are 22.24 pt wide.
        let wrap10 = |s: &str, max: f32| wrap(s, max, Face::Regular, 10.0);
        assert_eq!(wrap10("1 22 333", 23.0), ["1 22", "333"]);
        assert_eq!(wrap10("1234567890", 23.0), ["1234", "5678", "90"]);
        assert_eq!(wrap10("", 23.0), [""]);
        assert_eq!(wrap10("1  2", 0.0), ["1", "2"]);
        let long = "Ünïcödé 東京 WWWWWWWWWW mmmmmmmmmm ".repeat(20);
        for part in wrap(&long, 200.0, Face::Bold, BODY) {
            assert!(width(&part, Face::Bold, BODY) <= 200.0, "{part}");
        }
    }

    #[test]
    fn periods_show_their_last_day_not_the_exclusive_end() {
        assert_eq!(
            span(at(2026, 4, 1), at(2026, 5, 1)),
            "2026-04-01 \u{2013} 2026-04-30"
        );
        let noon = Utc.with_ymd_and_hms(2026, 4, 11, 12, 0, 0).unwrap();
        assert_eq!(span(at(2026, 4, 1), noon), "2026-04-01 \u{2013} 2026-04-11");
        assert_eq!(span(at(2026, 4, 1), at(2026, 4, 1)), "2026-04-01");
    }

    #[test]
    fn accept_header_picks_the_format() {
        assert_eq!(Format::from_accept("application/pdf"), Some(Format::Pdf));
        assert_eq!(
            Format::from_accept("text/html,application/xhtml+xml"),
            Some(Format::Html)
        );
        assert_eq!(Format::from_accept("*/*"), Some(Format::Json));
        assert_eq!(Format::from_accept("image/png"), None);
        assert_eq!(Format::from_accept(""), None);
        assert_eq!(
            Format::from_accept("Application/JSON; charset=utf-8"),
            Some(Format::Json)
        );
    }

    #[test]
    fn accept_header_q_values_rank_without_breaking_parsing() {
        assert_eq!(
            Format::from_accept("application/json;q=0.5, application/pdf"),
            Some(Format::Pdf)
        );
        assert_eq!(
            Format::from_accept("text/html;q=0, */*;q=0.1"),
            Some(Format::Json)
        );
        assert_eq!(Format::from_accept("application/pdf;q=0"), None);
        assert_eq!(
            Format::from_accept("application/pdf;q=banana;level=1 ,, ;"),
            Some(Format::Pdf)
        );
        assert_eq!(
            Format::from_accept("image/png, text/*;q=0.3"),
            Some(Format::Html)
        );
    }

    #[test]
    fn suffix_names_the_format_and_content_types_match() {
        assert_eq!(Format::from_suffix("json"), Some(Format::Json));
        assert_eq!(Format::from_suffix("html"), Some(Format::Html));
        assert_eq!(Format::from_suffix("PDF"), Some(Format::Pdf));
        assert_eq!(Format::from_suffix("xml"), None);
        assert_eq!(Format::from_suffix(""), None);
        for f in [Format::Json, Format::Html, Format::Pdf] {
            assert_eq!(Format::from_suffix(f.suffix()), Some(f));
            assert_eq!(Format::from_accept(f.content_type()), Some(f));
        }
    }
}
