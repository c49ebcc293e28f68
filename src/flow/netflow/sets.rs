//! The sets of a NetFlow v9 or IPFIX message: templates (compiled into plans as they come),
//! data sets (decoded, or held until their template comes) and sequence numbers.

use super::fields::{Plan, REVERSE_PEN, Target, enterprise_target, iana_target};
use super::records::{RecordError, SessionView, decode_records};
use super::state::{MAX_TEMPLATE_FIELDS, Pending, Session};
use super::{Ctx, DecoderConfig, ExporterStats, u16_at, u32_at};
use crate::flow::Flow;
use std::sync::Arc;

/// What was wrong with one set of a v9 or IPFIX message. `set_id` is the set's id (0/1 v9
/// templates, 2/3 IPFIX templates, 256 and up data) and `offset` the byte offset of its header
/// in the message (the datagram for v9); detail offsets (`at`) count from the set's body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// A set length below 4 or beyond the message; the rest of the message is not read.
    #[error("set {set_id} claims {len} bytes, {left} remain")]
    Length {
        /// The set id.
        set_id: u16,
        /// Offset of the set header.
        offset: usize,
        /// The length it claims.
        len: usize,
        /// The bytes left in the message from its header on.
        left: usize,
    },
    /// A set id that is neither a template set nor a data set (v9 2..=255, IPFIX 0, 1, 4..=255).
    #[error("reserved set id {set_id}")]
    Reserved {
        /// The set id.
        set_id: u16,
        /// Offset of the set header.
        offset: usize,
    },
    /// A template set that ends inside a template.
    #[error("template set truncated at byte {at}")]
    TemplateTruncated {
        /// The set id.
        set_id: u16,
        /// Offset of the set header.
        offset: usize,
        /// Where in the set's body the template's next field would start.
        at: usize,
    },
    /// A v9 options template whose scope or option length is not a multiple of 4.
    #[error(
        "options template {template_id}: lengths {scope_len}/{options_len} are not multiples of 4"
    )]
    OptionsLengths {
        /// The set id.
        set_id: u16,
        /// Offset of the set header.
        offset: usize,
        /// The template id.
        template_id: u16,
        /// Bytes of scope fields.
        scope_len: usize,
        /// Bytes of option fields.
        options_len: usize,
    },
    /// A template id below 256 (those are set ids).
    #[error("template id {template_id} is below 256")]
    TemplateId {
        /// The set id.
        set_id: u16,
        /// Offset of the set header.
        offset: usize,
        /// The template id.
        template_id: u16,
    },
    /// A template with more fields than [`MAX_TEMPLATE_FIELDS`].
    #[error(
        "template {template_id} has {fields} fields, more than the {MAX_TEMPLATE_FIELDS} accepted"
    )]
    TemplateFields {
        /// The set id.
        set_id: u16,
        /// Offset of the set header.
        offset: usize,
        /// The template id.
        template_id: u16,
        /// Its field count.
        fields: usize,
    },
    /// A data set that ends in a broken record (the set id is its template id).
    #[error("data set {set_id}: {error}")]
    Data {
        /// The set id, which is its template's id.
        set_id: u16,
        /// Offset of the set header.
        offset: usize,
        /// What is wrong with the record (in the message, not as a source: the chain
        /// prints once).
        error: RecordError,
    },
}

impl SetError {
    /// The id of the set the error is about.
    pub fn set_id(&self) -> u16 {
        match self {
            SetError::Length { set_id, .. }
            | SetError::Reserved { set_id, .. }
            | SetError::TemplateTruncated { set_id, .. }
            | SetError::OptionsLengths { set_id, .. }
            | SetError::TemplateId { set_id, .. }
            | SetError::TemplateFields { set_id, .. }
            | SetError::Data { set_id, .. } => *set_id,
        }
    }

    /// The byte offset of the set's header in the message.
    pub fn offset(&self) -> usize {
        match self {
            SetError::Length { offset, .. }
            | SetError::Reserved { offset, .. }
            | SetError::TemplateTruncated { offset, .. }
            | SetError::OptionsLengths { offset, .. }
            | SetError::TemplateId { offset, .. }
            | SetError::TemplateFields { offset, .. }
            | SetError::Data { offset, .. } => *offset,
        }
    }

    /// The template the error is about, when there is one (for a data set, its template).
    pub fn template_id(&self) -> Option<u16> {
        match self {
            SetError::OptionsLengths { template_id, .. }
            | SetError::TemplateId { template_id, .. }
            | SetError::TemplateFields { template_id, .. } => Some(*template_id),
            SetError::Data { set_id, .. } => Some(*set_id),
            _ => None,
        }
    }
}

/// Decodes the sets of one v9 or IPFIX message of `session`. `body` follows the message
/// header (20 bytes for v9, 16 for IPFIX); error offsets count from the message's start.
pub(super) fn decode_sets(
    session: &mut Session,
    stats: &mut ExporterStats,
    config: &DecoderConfig,
    mut body: &[u8],
    ctx: Ctx,
    ipfix: bool,
    out: &mut dyn FnMut(Flow),
) -> Result<u64, SetError> {
    let timeout = config.template_timeout_ms.unwrap_or(i64::MAX);
    let header = if ipfix { 16 } else { 20 };
    let end = header + body.len();
    let mut flows = 0u64;
    let mut first_error = None;
    let mut usable = false;
    while body.len() >= 4 {
        let id = u16_at(body, 0);
        let len = usize::from(u16_at(body, 2));
        let offset = end - body.len();
        if len < 4 || len > body.len() {
            // Padding at the end of a v9 packet is zeros; anything else is malformed.
            if body.iter().all(|&b| b == 0) {
                break;
            }
            stats.malformed += 1;
            first_error.get_or_insert(SetError::Length {
                set_id: id,
                offset,
                len,
                left: body.len(),
            });
            break;
        }
        let set = &body[4..len];
        body = &body[len..];
        let is_template = if ipfix {
            id == 2 || id == 3
        } else {
            id == 0 || id == 1
        };
        if is_template {
            let options = if ipfix { id == 3 } else { id == 1 };
            let (list, error) = parse_templates(set, ipfix, options, id, offset);
            if let Some(e) = error {
                stats.malformed += 1;
                first_error.get_or_insert(e);
            }
            usable |= !list.is_empty();
            for (tid, plan) in list {
                stats.templates += 1;
                let Some(plan) = plan else {
                    session.remove_template(tid);
                    continue;
                };
                stats.unknown_enterprise_fields += u64::from(plan.unknown_enterprise);
                let plan = Arc::new(plan);
                session.insert_template(tid, plan.clone(), ctx.export_ms, config, stats);
                // Data that waited for this template.
                for p in session.take_pending(tid) {
                    let mut view = SessionView {
                        sampling: &mut session.sampling,
                        boot: &mut session.boot_ms,
                        stats,
                    };
                    let (n, error) = decode_records(&plan, &p.data, &p.ctx, &mut view, out);
                    flows += n;
                    if error.is_some() {
                        stats.malformed += 1;
                    }
                }
            }
        } else if id >= 256 {
            let plan = match session.templates.get(&id) {
                Some((plan, seen)) if ctx.export_ms.saturating_sub(*seen) <= timeout => {
                    Some(plan.clone())
                }
                Some(_) => {
                    session.remove_template(id);
                    stats.templates_expired += 1;
                    None
                }
                None => None,
            };
            match plan {
                Some(plan) => {
                    let mut view = SessionView {
                        sampling: &mut session.sampling,
                        boot: &mut session.boot_ms,
                        stats,
                    };
                    let (n, error) = decode_records(&plan, set, &ctx, &mut view, out);
                    flows += n;
                    usable |= n > 0 || error.is_none();
                    if let Some(error) = error {
                        stats.malformed += 1;
                        first_error.get_or_insert(SetError::Data {
                            set_id: id,
                            offset,
                            error,
                        });
                    }
                }
                None => {
                    usable = true;
                    let p = Pending {
                        template: id,
                        ctx,
                        data: set.to_vec(),
                    };
                    session.push_pending(p, config, stats);
                }
            }
        } else {
            stats.malformed += 1;
            first_error.get_or_insert(SetError::Reserved { set_id: id, offset });
        }
    }
    // Pending data whose template did not come in time is given up.
    stats.missing_template += session.expire_pending(ctx.export_ms, timeout);
    match first_error {
        Some(e) if !usable => Err(e),
        _ => Ok(flows),
    }
}

pub(super) fn track_sequence(
    session: &mut Session,
    stats: &mut ExporterStats,
    seq: u32,
    count: u32,
    per_record: bool,
) {
    if let Some((last, last_count)) = session.last_seq {
        let expected = if per_record {
            last.wrapping_add(last_count)
        } else {
            last.wrapping_add(1)
        };
        let gap = seq.wrapping_sub(expected);
        if gap != 0 && gap < 1 << 30 {
            stats.sequence_lost += u64::from(gap);
        }
    }
    session.last_seq = Some((seq, count));
}

/// Parses a template or options-template set: the templates (`None` plans are withdrawals)
/// up to the first broken one, and what was wrong with it. `set` is the body of set `set_id`,
/// whose header is at `offset` in the message.
fn parse_templates(
    set: &[u8],
    ipfix: bool,
    options: bool,
    set_id: u16,
    offset: usize,
) -> (Vec<(u16, Option<Plan>)>, Option<SetError>) {
    let mut out = Vec::new();
    let error = parse_templates_into(set, ipfix, options, set_id, offset, &mut out).err();
    (out, error)
}

fn parse_templates_into(
    set: &[u8],
    ipfix: bool,
    options: bool,
    set_id: u16,
    offset: usize,
    out: &mut Vec<(u16, Option<Plan>)>,
) -> Result<(), SetError> {
    let mut p = 0usize;
    let need = |p: usize, n: usize| -> Result<(), SetError> {
        if p + n > set.len() {
            Err(SetError::TemplateTruncated {
                set_id,
                offset,
                at: p,
            })
        } else {
            Ok(())
        }
    };
    while set.len() - p >= 4 {
        let tid = u16_at(set, p);
        if tid == 0 && set[p..].iter().all(|&b| b == 0) {
            break; // padding
        }
        let (field_count, scope_count) = if ipfix {
            let fc = u16_at(set, p + 2);
            p += 4;
            if fc == 0 {
                out.push((tid, None));
                continue;
            }
            let sc = if options {
                need(p, 2)?;
                let sc = u16_at(set, p);
                p += 2;
                sc
            } else {
                0
            };
            (usize::from(fc), sc)
        } else if options {
            need(p, 6)?;
            let scope_len = usize::from(u16_at(set, p + 2));
            let opt_len = usize::from(u16_at(set, p + 4));
            p += 6;
            if scope_len % 4 != 0 || opt_len % 4 != 0 {
                return Err(SetError::OptionsLengths {
                    set_id,
                    offset,
                    template_id: tid,
                    scope_len,
                    options_len: opt_len,
                });
            }
            ((scope_len + opt_len) / 4, (scope_len / 4) as u16)
        } else {
            let fc = u16_at(set, p + 2);
            p += 4;
            (usize::from(fc), 0)
        };
        if tid < 256 {
            return Err(SetError::TemplateId {
                set_id,
                offset,
                template_id: tid,
            });
        }
        if field_count > MAX_TEMPLATE_FIELDS {
            return Err(SetError::TemplateFields {
                set_id,
                offset,
                template_id: tid,
                fields: field_count,
            });
        }
        let mut fields = Vec::with_capacity(field_count);
        let mut unknown = 0u16;
        for i in 0..field_count {
            need(p, 4)?;
            let raw_id = u16_at(set, p);
            let len = u16_at(set, p + 2);
            p += 4;
            let is_scope = i < usize::from(scope_count);
            let target = if ipfix && raw_id & 0x8000 != 0 {
                need(p, 4)?;
                let pen = u32_at(set, p);
                p += 4;
                let t = enterprise_target(pen, raw_id & 0x7fff);
                if t == Target::Skip && pen != REVERSE_PEN {
                    unknown = unknown.saturating_add(1);
                }
                t
            } else if !ipfix && options && is_scope {
                // v9 scope field types (system, interface, ...) are not IEs.
                Target::Skip
            } else {
                iana_target(raw_id, ipfix)
            };
            // Length 65535 is a variable-length field (RFC 7011 §7). RFC 3954 does not define
            // it for v9, but exporters send it (H3C NetStream) and nfdump decodes it the same
            // way in both protocols.
            fields.push((target, len));
        }
        out.push((tid, Some(Plan::new(&fields, options, scope_count, unknown))));
    }
    Ok(())
}
