//! Integer geometry. Positions are centimetres in `i32`, so movement and
//! collision are exact on every platform.

/// A point (or a velocity) in centimetres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Point {
    pub x: i32,
    pub y: i32,
}

impl Point {
    pub const fn new(x: i32, y: i32) -> Self {
        Self { x, y }
    }

    /// Squared distance, in `i64` so it never overflows for `i32` inputs.
    pub fn dist2(self, other: Point) -> i64 {
        let dx = i64::from(self.x) - i64::from(other.x);
        let dy = i64::from(self.y) - i64::from(other.y);
        dx * dx + dy * dy
    }

    pub fn len2(self) -> i64 {
        self.dist2(Point::new(0, 0))
    }
}

/// An axis-aligned rectangle: `x..x+w`, `y..y+h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
}

impl Rect {
    pub const fn new(x: i32, y: i32, w: i32, h: i32) -> Self {
        Self { x, y, w, h }
    }

    /// Whether `p` lies inside (edges included).
    pub fn contains(&self, p: Point) -> bool {
        p.x >= self.x && p.y >= self.y && p.x <= self.x.saturating_add(self.w) && p.y <= self.y.saturating_add(self.h)
    }

    /// Whether a circle of `radius` around `p` overlaps this rectangle.
    pub fn hits_circle(&self, p: Point, radius: i32) -> bool {
        let cx = p.x.clamp(self.x, self.x.saturating_add(self.w));
        let cy = p.y.clamp(self.y, self.y.saturating_add(self.h));
        p.dist2(Point::new(cx, cy)) < i64::from(radius) * i64::from(radius)
    }
}

/// Squared length, clamped: a vector no longer than `max` units.
pub fn within(v: Point, max: i32) -> bool {
    v.len2() <= i64::from(max) * i64::from(max)
}

/// A step of at most `speed` from `from` towards `to`, in integers.
pub fn step_towards(from: Point, to: Point, speed: i32) -> Point {
    let dx = i64::from(to.x) - i64::from(from.x);
    let dy = i64::from(to.y) - i64::from(from.y);
    let d2 = dx * dx + dy * dy;
    let s = i64::from(speed);
    if d2 <= s * s {
        return Point::new(dx as i32, dy as i32);
    }
    let d = isqrt(d2).max(1);
    Point::new((dx * s / d) as i32, (dy * s / d) as i32)
}

/// Integer square root (floor), exact for every `i64` >= 0.
pub fn isqrt(n: i64) -> i64 {
    if n <= 0 {
        return 0;
    }
    let mut x = (n as f64).sqrt() as i64;
    // Correct the float estimate so the result is exact whatever the FPU did.
    while x * x > n {
        x -= 1;
    }
    while (x + 1) * (x + 1) <= n {
        x += 1;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isqrt_is_exact() {
        for n in [0i64, 1, 2, 3, 4, 15, 16, 17, 99_980_001, i64::from(i32::MAX)] {
            let r = isqrt(n);
            assert!(r * r <= n && (r + 1) * (r + 1) > n, "isqrt({n}) = {r}");
        }
    }

    #[test]
    fn step_never_exceeds_speed() {
        let s = step_towards(Point::new(0, 0), Point::new(1000, 1000), 30);
        assert!(within(s, 30));
        assert_eq!(step_towards(Point::new(0, 0), Point::new(3, 4), 30), Point::new(3, 4));
    }

    #[test]
    fn circle_rect_overlap() {
        let r = Rect::new(100, 100, 50, 50);
        assert!(r.hits_circle(Point::new(125, 125), 1));
        assert!(r.hits_circle(Point::new(95, 125), 10));
        assert!(!r.hits_circle(Point::new(80, 125), 10));
    }
}
