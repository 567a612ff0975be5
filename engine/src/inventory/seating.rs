//! Best-available seat selection over a tier's rows. Pure: reads seat owners, chooses, changes nothing.

use serde::{Deserialize, Serialize};

use super::HashSet;

/// A row of one seated tier, with its seats (global seat indices, in physical order) and how many
/// of them are free. Rows are kept front first (see `Inventory::new`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RowIndex {
    pub seats: Vec<u32>,
    pub free: u32,
}

/// Picks `quantity` seats in one row: the front-most row that has that many free seats side by side,
/// and in it the run nearest the row's centre. When no row has such a run, the front-most row with
/// `quantity` free seats at all gives the narrowest spread of them. `None` when no row has enough.
/// `is_free(seat)` says whether a seat may be taken; `excluded` are seats this request already took.
pub(crate) fn best_available(
    rows: &[RowIndex],
    quantity: u32,
    excluded: &HashSet<u32>,
    is_free: impl Fn(u32) -> bool,
) -> Option<Vec<u32>> {
    let n = quantity as usize;
    if n == 0 {
        return None;
    }
    let usable = |seat: u32| is_free(seat) && !excluded.contains(&seat);
    let mut fallback: Option<Vec<u32>> = None;
    for row in rows.iter().filter(|r| r.free >= quantity) {
        if let Some(start) = nearest_centre_run(&row.seats, n, &usable) {
            return Some(row.seats[start..start + n].to_vec());
        }
        if fallback.is_none() {
            fallback = narrowest_spread(&row.seats, n, &usable);
        }
    }
    fallback
}

/// Start of the window of `n` consecutive usable seats whose middle is nearest the row's middle.
fn nearest_centre_run(seats: &[u32], n: usize, usable: &impl Fn(u32) -> bool) -> Option<usize> {
    // Positions are doubled so that the middle of an even-length span is an integer.
    let row_mid2 = seats.len() as i64 - 1;
    let mut best: Option<(i64, usize)> = None;
    let mut run_start = 0;
    for i in 0..=seats.len() {
        let open = i < seats.len() && usable(seats[i]);
        if open {
            continue;
        }
        // [run_start, i) is a maximal run of usable seats.
        let run_len = i - run_start;
        if run_len >= n {
            // Ideal start centres the window on the row's middle; clamp into the run.
            let ideal2 = row_mid2 - (n as i64 - 1);
            let ideal = (ideal2.max(0) / 2) as usize;
            let start = ideal.clamp(run_start, i - n);
            let dist = ((2 * start as i64 + n as i64 - 1) - row_mid2).abs();
            if best.is_none_or(|(d, _)| dist < d) {
                best = Some((dist, start));
            }
        }
        run_start = i + 1;
    }
    best.map(|(_, s)| s)
}

/// The `n` usable seats of a row spread over the fewest positions.
fn narrowest_spread(seats: &[u32], n: usize, usable: &impl Fn(u32) -> bool) -> Option<Vec<u32>> {
    let positions: Vec<usize> = (0..seats.len()).filter(|&i| usable(seats[i])).collect();
    if positions.len() < n {
        return None;
    }
    let start = (0..=positions.len() - n).min_by_key(|&k| positions[k + n - 1] - positions[k])?;
    Some(
        positions[start..start + n]
            .iter()
            .map(|&p| seats[p])
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seats: std::ops::Range<u32>) -> RowIndex {
        RowIndex {
            free: seats.len() as u32,
            seats: seats.collect(),
        }
    }

    fn check(rows: &[RowIndex], taken: &[u32], quantity: u32, expected: Option<Vec<u32>>) {
        let got = best_available(rows, quantity, &HashSet::default(), |s| !taken.contains(&s));
        assert_eq!(got, expected, "taken {taken:?}, quantity {quantity}");
    }

    #[test]
    fn picks_centre_of_front_row() {
        let rows = [row(0..10), row(10..20)];
        check(&rows, &[], 2, Some(vec![4, 5]));
        check(&rows, &[], 3, Some(vec![3, 4, 5]));
        check(&rows, &[], 10, Some((0..10).collect()));
    }

    #[test]
    fn moves_back_when_front_row_cannot_seat_them_together() {
        let mut rows = [row(0..6), row(6..12)];
        rows[0].free = 4;
        check(&rows, &[2, 3], 3, Some(vec![7, 8, 9]));
    }

    #[test]
    fn nearest_centre_run_within_row() {
        let rows = [row(0..10)];
        // Free runs: [0,3) and [6,10); the run nearer the middle wins.
        let mut r = rows.clone();
        r[0].free = 7;
        check(&r, &[3, 4, 5], 2, Some(vec![6, 7]));
    }

    #[test]
    fn falls_back_to_narrowest_spread_in_one_row() {
        let mut rows = [row(0..6)];
        rows[0].free = 3;
        check(&rows, &[1, 3, 5], 3, Some(vec![0, 2, 4]));
        check(&rows, &[1, 3, 5], 4, None);
    }

    #[test]
    fn excluded_seats_are_skipped() {
        let rows = [row(0..4)];
        let excluded: HashSet<u32> = [1].into_iter().collect();
        assert_eq!(
            best_available(&rows, 2, &excluded, |_| true),
            Some(vec![2, 3])
        );
    }
}
