//! A uniform grid over the field, rebuilt from scratch when asked (counting
//! sort, allocations reused): answers "what is within r of p" without
//! looking at everything.

use crate::geom::Point;

#[derive(Debug, Clone)]
pub struct CellGrid<T> {
    cell: i32,
    cols: i32,
    rows: i32,
    /// `cell_start[c]..cell_start[c+1]` indexes `items` for cell `c`.
    cell_start: Vec<u32>,
    items: Vec<(Point, T)>,
    staging: Vec<(u32, Point, T)>,
    cursor: Vec<u32>,
}

impl<T> Default for CellGrid<T> {
    fn default() -> Self {
        Self {
            cell: 1,
            cols: 0,
            rows: 0,
            cell_start: Vec::new(),
            items: Vec::new(),
            staging: Vec::new(),
            cursor: Vec::new(),
        }
    }
}

impl<T: Copy> CellGrid<T> {
    /// Refills the grid for a `width` x `height` field with cells of `cell` cm.
    pub fn rebuild(&mut self, width: i32, height: i32, cell: i32, items: impl Iterator<Item = (Point, T)>) {
        self.cell = cell.max(100);
        self.cols = width / self.cell + 1;
        self.rows = height / self.cell + 1;
        let cells = (self.cols * self.rows) as usize;
        self.staging.clear();
        for (p, t) in items {
            let c = self.cell_of(p);
            self.staging.push((c, p, t));
        }
        self.cell_start.clear();
        self.cell_start.resize(cells + 1, 0);
        for (c, _, _) in &self.staging {
            self.cell_start[*c as usize + 1] += 1;
        }
        for c in 0..cells {
            self.cell_start[c + 1] += self.cell_start[c];
        }
        // Stable placement: within a cell, items keep their input order. The
        // first fill only sizes the vector; every slot is overwritten below.
        self.items.clear();
        self.items.extend(self.staging.iter().map(|(_, p, t)| (*p, *t)));
        self.cursor.clone_from(&self.cell_start);
        for (c, p, t) in &self.staging {
            let slot = &mut self.cursor[*c as usize];
            self.items[*slot as usize] = (*p, *t);
            *slot += 1;
        }
    }

    fn cell_of(&self, p: Point) -> u32 {
        let cx = (p.x / self.cell).clamp(0, self.cols - 1);
        let cy = (p.y / self.cell).clamp(0, self.rows - 1);
        (cy * self.cols + cx) as u32
    }

    /// Calls `visit` for every item within `radius` of `center`.
    pub fn for_each_within(&self, center: Point, radius: i32, mut visit: impl FnMut(Point, &T)) {
        if self.cols == 0 {
            return;
        }
        let r2 = i64::from(radius) * i64::from(radius);
        let x0 = (center.x.saturating_sub(radius) / self.cell).clamp(0, self.cols - 1);
        let x1 = (center.x.saturating_add(radius) / self.cell).clamp(0, self.cols - 1);
        let y0 = (center.y.saturating_sub(radius) / self.cell).clamp(0, self.rows - 1);
        let y1 = (center.y.saturating_add(radius) / self.cell).clamp(0, self.rows - 1);
        for cy in y0..=y1 {
            let row = (cy * self.cols) as usize;
            let (start, end) = (self.cell_start[row + x0 as usize], self.cell_start[row + x1 as usize + 1]);
            for (p, t) in &self.items[start as usize..end as usize] {
                if p.dist2(center) <= r2 {
                    visit(*p, t);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exactly_what_is_within_the_radius() {
        let points: Vec<Point> = (0..50).flat_map(|x| (0..50).map(move |y| Point::new(x * 200, y * 200))).collect();
        let mut grid = CellGrid::default();
        grid.rebuild(10_000, 10_000, 1_000, points.iter().map(|p| (*p, *p)));
        assert_eq!(grid.len(), 2_500);
        for (center, radius) in
            [(Point::new(5_000, 5_000), 1_500), (Point::new(0, 0), 700), (Point::new(9_900, 100), 3_000)]
        {
            let mut found = Vec::new();
            grid.for_each_within(center, radius, |_, p| found.push(*p));
            found.sort();
            let mut expected: Vec<Point> =
                points.iter().copied().filter(|p| p.dist2(center) <= i64::from(radius).pow(2)).collect();
            expected.sort();
            assert_eq!(found, expected);
        }
    }
}
