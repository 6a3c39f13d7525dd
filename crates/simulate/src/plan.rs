//! The seeded order plans: the outcome mix, and each order's outcome, customer, items and
//! quantities, fixed by the seed and the order's number alone (each order has its own
//! ChaCha12 stream, a generator that does not change with the `rand` version).

use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// The SKU that out-of-stock orders ask too much of.
pub const SCARCE_SKU: &str = "SIM-SCARCE";

/// The outcome mix: relative weights of the three kinds of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub happy: u32,
    pub declined: u32,
    pub out_of_stock: u32,
}

impl FromStr for Mix {
    type Err = String;

    /// `happy=90,declined=5,outOfStock=5`; a kind left out weighs 0.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut mix = Mix {
            happy: 0,
            declined: 0,
            out_of_stock: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not kind=weight (e.g. happy=90)"))?;
            let weight: u32 = weight.trim().parse().map_err(|_| {
                format!("the weight of '{key}' must be a whole number, got '{weight}'")
            })?;
            let slot = match key
                .trim()
                .to_ascii_lowercase()
                .replace(['-', '_'], "")
                .as_str()
            {
                "happy" => &mut mix.happy,
                "declined" => &mut mix.declined,
                "outofstock" => &mut mix.out_of_stock,
                other => {
                    return Err(format!(
                        "'{other}' is not an outcome; use happy, declined or outOfStock"
                    ))
                }
            };
            *slot = weight;
        }
        if mix.total() == 0 {
            return Err("the weights add up to 0; give at least one kind a weight".into());
        }
        Ok(mix)
    }
}

impl Mix {
    fn total(&self) -> u64 {
        self.happy as u64 + self.declined as u64 + self.out_of_stock as u64
    }
}

/// The outcome an order is planned to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Happy,
    Declined,
    OutOfStock,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Happy => "happy",
            Kind::Declined => "declined",
            Kind::OutOfStock => "outOfStock",
        }
    }
}

/// One order's plan, fixed by the seed and the order's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub kind: Kind,
    pub customer: u64,
    /// (SKU, quantity), distinct SKUs.
    pub lines: Vec<(String, u32)>,
}

/// The plan of order number `n`: its own random stream, derived from the seed and `n`.
pub fn plan(seed: u64, n: u64, mix: Mix, customers: u64, skus: u64) -> Plan {
    let mut rng = ChaCha12Rng::seed_from_u64(splitmix64(
        seed ^ splitmix64(n.wrapping_add(0x9E37_79B9_7F4A_7C15)),
    ));
    let pick = rng.random_range(0..mix.total());
    let kind = if pick < mix.happy as u64 {
        Kind::Happy
    } else if pick < mix.happy as u64 + mix.declined as u64 {
        Kind::Declined
    } else {
        Kind::OutOfStock
    };
    let customer = rng.random_range(0..customers);
    let wanted = rng.random_range(1..=3u64).min(skus);
    let mut lines: Vec<(String, u32)> = Vec::new();
    while (lines.len() as u64) < wanted {
        let sku = sku_name(rng.random_range(0..skus));
        if lines.iter().all(|(s, _)| *s != sku) {
            lines.push((sku, rng.random_range(1..=3)));
        }
    }
    if kind == Kind::OutOfStock {
        lines.push((SCARCE_SKU.to_string(), rng.random_range(2..=5)));
    }
    Plan {
        kind,
        customer,
        lines,
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn sku_name(i: u64) -> String {
    format!("SIM-{:04}", i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same seed plans the same orders from one build to the next: pinned plans (the
    /// ones rand 0.9's StdRng, also ChaCha12, gave before the simulator named its
    /// generator).
    #[test]
    fn a_seed_plans_the_orders_it_always_planned() {
        let mix: Mix = "happy=1,declined=1,outOfStock=1".parse().unwrap();
        let line = |sku: &str, quantity| (sku.to_string(), quantity);
        let expected = [
            (Kind::Happy, 26, vec![line("SIM-0010", 3)]),
            (Kind::Declined, 85, vec![line("SIM-0020", 1)]),
            (
                Kind::OutOfStock,
                3,
                vec![line("SIM-0018", 1), line(SCARCE_SKU, 2)],
            ),
            (Kind::Happy, 80, vec![line("SIM-0005", 3)]),
        ];
        for (n, (kind, customer, lines)) in expected.into_iter().enumerate() {
            assert_eq!(
                plan(42, n as u64, mix, 100, 20),
                Plan {
                    kind,
                    customer,
                    lines
                },
                "order {n}"
            );
        }
    }
}
