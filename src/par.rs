//! Work split over a few threads, for the steps that are large at once (parsing a big rule
//! file, scoring a big inventory): contiguous parts of a slice on scoped threads, the results
//! in the slice's order, a panic in a part resumed on the caller (never a shorter answer).

/// Threads for a step of `items` items: one below `from` items, otherwise as many as the
/// machine has, at most four.
pub(crate) fn threads_for(items: usize, from: usize) -> usize {
    if items < from {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
    }
}

/// `f` of every item, in order, computed in `threads` contiguous parts.
pub(crate) fn map_in_order<T, R, F>(items: &[T], threads: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    if threads <= 1 || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(per)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut all = Vec::with_capacity(items.len());
        for part in parts {
            all.extend(part.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        all
    })
}

#[cfg(test)]
mod tests {
    use super::map_in_order;

    #[test]
    fn results_keep_the_order_of_the_items_on_any_number_of_threads() {
        let items: Vec<u32> = (0..1001).collect();
        for threads in [1, 2, 3, 4, 7] {
            let out = map_in_order(&items, threads, |i| i * 2);
            assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
        assert!(map_in_order(&[] as &[u32], 4, |i| *i).is_empty());
    }

    #[test]
    #[should_panic(expected = "item 700")]
    fn a_panic_in_a_part_reaches_the_caller() {
        let items: Vec<u32> = (0..1000).collect();
        map_in_order(&items, 2, |i| {
            assert!(*i != 700, "item 700");
            *i
        });
    }
}
