//! The sets of a NetFlow v9 or IPFIX message: templates (compiled into plans as they come),
//! data sets (decoded, or held until their template comes) and sequence numbers.

use super::fields::{Plan, REVERSE_PEN, Target, enterprise_target, iana_target};
use super::records::{SessionView, decode_records};
use super::state::{MAX_TEMPLATE_FIELDS, Pending, Session};
use super::{Ctx, DecoderConfig, ExporterStats, u16_at, u32_at};
use crate::flow::Flow;
use std::sync::Arc;

/// Decodes the sets of one v9 or IPFIX message of `session`.
pub(super) fn decode_sets(
    session: &mut Session,
    stats: &mut ExporterStats,
    config: &DecoderConfig,
    mut body: &[u8],
    ctx: Ctx,
    ipfix: bool,
    out: &mut dyn FnMut(Flow),
) -> Result<u64, String> {
    let timeout = config.template_timeout_ms.unwrap_or(i64::MAX);
    let mut flows = 0u64;
    let mut first_error = None;
    let mut usable = false;
    while body.len() >= 4 {
        let id = u16_at(body, 0);
        let len = usize::from(u16_at(body, 2));
        if len < 4 || len > body.len() {
            // Padding at the end of a v9 packet is zeros; anything else is malformed.
            if body.iter().all(|&b| b == 0) {
                break;
            }
            stats.malformed += 1;
            first_error.get_or_insert(format!(
                "set {id} claims {len} bytes, {} remain",
                body.len()
            ));
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
            let (list, error) = parse_templates(set, ipfix, options);
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
                    if let Some(e) = error {
                        stats.malformed += 1;
                        first_error.get_or_insert(format!("data set {id}: {e}"));
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
            first_error.get_or_insert(format!("reserved set id {id}"));
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
/// up to the first broken one, and what was wrong with it.
fn parse_templates(
    set: &[u8],
    ipfix: bool,
    options: bool,
) -> (Vec<(u16, Option<Plan>)>, Option<String>) {
    let mut out = Vec::new();
    let error = parse_templates_into(set, ipfix, options, &mut out).err();
    (out, error)
}

fn parse_templates_into(
    set: &[u8],
    ipfix: bool,
    options: bool,
    out: &mut Vec<(u16, Option<Plan>)>,
) -> Result<(), String> {
    let mut p = 0usize;
    let need = |p: usize, n: usize| -> Result<(), String> {
        if p + n > set.len() {
            Err(format!("template set truncated at byte {p}"))
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
                return Err(format!(
                    "options template {tid}: lengths {scope_len}/{opt_len} are not multiples of 4"
                ));
            }
            ((scope_len + opt_len) / 4, (scope_len / 4) as u16)
        } else {
            let fc = u16_at(set, p + 2);
            p += 4;
            (usize::from(fc), 0)
        };
        if tid < 256 {
            return Err(format!("template id {tid} is below 256"));
        }
        if field_count > MAX_TEMPLATE_FIELDS {
            return Err(format!(
                "template {tid} has {field_count} fields, more than the {MAX_TEMPLATE_FIELDS} accepted"
            ));
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
