//! A generator of mathematics questions and answers in the style of DeepMind's mathematics
//! dataset (Saxton et al. 2019), the third domain of the paper's Figure 9: arithmetic,
//! linear equations (one and two unknowns), polynomials (evaluation, expansion,
//! derivatives) and number theory (gcd, lcm, remainders, primality, factorisation).
//! Every problem carries its parameters, so tests can check the answer independently.

use rand::rngs::StdRng;
use rand::Rng;

/// One question with its answer, and what was drawn to make it.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// `a op b` for op in + − ×, or exact division.
    Arithmetic {
        a: i64,
        op: char,
        b: i64,
        answer: i64,
    },
    /// `a·x + b = c`, solution x.
    Linear {
        a: i64,
        b: i64,
        c: i64,
        var: char,
        x: i64,
    },
    /// `a1·x + b1·y = c1`, `a2·x + b2·y = c2`; asks for x.
    LinearPair {
        a1: i64,
        b1: i64,
        c1: i64,
        a2: i64,
        b2: i64,
        c2: i64,
        x: i64,
        y: i64,
    },
    /// p(at) for p with `coefficients` (constant first).
    Evaluate {
        coefficients: Vec<i64>,
        at: i64,
        answer: i64,
    },
    /// (a·x + b)(c·x + d) expanded.
    Expand {
        a: i64,
        b: i64,
        c: i64,
        d: i64,
    },
    /// d/dx of p with `coefficients` (constant first).
    Derivative {
        coefficients: Vec<i64>,
    },
    Gcd {
        a: i64,
        b: i64,
        answer: i64,
    },
    Lcm {
        a: i64,
        b: i64,
        answer: i64,
    },
    Remainder {
        a: i64,
        b: i64,
        answer: i64,
    },
    IsPrime {
        n: i64,
        answer: bool,
    },
    Factorise {
        n: i64,
        factors: Vec<i64>,
    },
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

fn is_prime(n: i64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

fn prime_factors(mut n: i64) -> Vec<i64> {
    let mut factors = Vec::new();
    let mut d = 2;
    while d * d <= n {
        while n % d == 0 {
            factors.push(d);
            n /= d;
        }
        d += 1;
    }
    if n > 1 {
        factors.push(n);
    }
    factors
}

fn nonzero(rng: &mut StdRng, lo: i64, hi: i64) -> i64 {
    loop {
        let v = rng.random_range(lo..=hi);
        if v != 0 {
            return v;
        }
    }
}

/// A polynomial `coefficients[0] + coefficients[1]·x + ...` written as the dataset does.
fn poly(coefficients: &[i64], var: char) -> String {
    let mut terms = Vec::new();
    for (power, &c) in coefficients.iter().enumerate().rev() {
        if c == 0 {
            continue;
        }
        let body = match power {
            0 => c.abs().to_string(),
            1 if c.abs() == 1 => var.to_string(),
            1 => format!("{}*{var}", c.abs()),
            _ if c.abs() == 1 => format!("{var}**{power}"),
            _ => format!("{}*{var}**{power}", c.abs()),
        };
        let sign = if c < 0 { "-" } else { "+" };
        terms.push(if terms.is_empty() {
            format!("{}{body}", if c < 0 { "-" } else { "" })
        } else {
            format!("{sign} {body}")
        });
    }
    if terms.is_empty() {
        "0".into()
    } else {
        terms.join(" ")
    }
}

impl Problem {
    pub fn draw(rng: &mut StdRng) -> Problem {
        let vars = ['x', 'y', 'z', 'k', 'n', 'q', 'r', 't', 'w'];
        match rng.random_range(0..11) {
            0 => {
                let op = ['+', '-', '*', '/'][rng.random_range(0..4)];
                let (a, b) = (rng.random_range(-999..=999), nonzero(rng, -99, 99));
                match op {
                    '+' => Problem::Arithmetic { a, op, b, answer: a + b },
                    '-' => Problem::Arithmetic { a, op, b, answer: a - b },
                    '*' => Problem::Arithmetic { a, op, b, answer: a * b },
                    _ => Problem::Arithmetic { a: a * b, op, b, answer: a },
                }
            }
            1 | 2 => {
                let (a, x, b) = (nonzero(rng, -20, 20), rng.random_range(-30..=30), rng.random_range(-200..=200));
                Problem::Linear { a, b, c: a * x + b, var: vars[rng.random_range(0..vars.len())], x }
            }
            3 => loop {
                let [a1, b1, a2, b2] = [0; 4].map(|_| nonzero(rng, -12, 12));
                if a1 * b2 - a2 * b1 == 0 {
                    continue;
                }
                let (x, y) = (rng.random_range(-15..=15), rng.random_range(-15..=15));
                break Problem::LinearPair { a1, b1, c1: a1 * x + b1 * y, a2, b2, c2: a2 * x + b2 * y, x, y };
            },
            4 => {
                let coefficients: Vec<i64> = (0..rng.random_range(2..5)).map(|_| rng.random_range(-9..=9)).collect();
                let at = rng.random_range(-6..=6);
                let answer = coefficients.iter().rev().fold(0, |acc, c| acc * at + c);
                Problem::Evaluate { coefficients, at, answer }
            }
            5 => Problem::Expand {
                a: nonzero(rng, -9, 9),
                b: rng.random_range(-9..=9),
                c: nonzero(rng, -9, 9),
                d: rng.random_range(-9..=9),
            },
            6 => Problem::Derivative {
                coefficients: (0..rng.random_range(2..6)).map(|_| rng.random_range(-12..=12)).collect(),
            },
            7 => {
                let k = rng.random_range(1..=40);
                let (a, b) = (k * rng.random_range(1..=60), k * rng.random_range(1..=60));
                Problem::Gcd { a, b, answer: gcd(a, b) }
            }
            8 => {
                let (a, b) = (rng.random_range(2..=60), rng.random_range(2..=60));
                Problem::Lcm { a, b, answer: a / gcd(a, b) * b }
            }
            9 => {
                let (a, b) = (rng.random_range(10..=99_999), rng.random_range(2..=97));
                if rng.random_bool(0.5) {
                    Problem::Remainder { a, b, answer: a % b }
                } else {
                    Problem::IsPrime { n: a, answer: is_prime(a) }
                }
            }
            _ => {
                let n = rng.random_range(4..=20_000);
                Problem::Factorise { n, factors: prime_factors(n) }
            }
        }
    }

    /// (question, answer) as text.
    pub fn render(&self) -> (String, String) {
        match self {
            Problem::Arithmetic { a, op, b, answer } => {
                let b = if *b < 0 { format!("({b})") } else { b.to_string() };
                (format!("What is {a} {op} {b}?"), answer.to_string())
            }
            Problem::Linear { a, b, c, var, x } => {
                (format!("Solve {} = {c} for {var}.", poly(&[*b, *a], *var)), x.to_string())
            }
            Problem::LinearPair { a1, b1, c1, a2, b2, c2, x, .. } => {
                let side = |a: i64, b: i64| {
                    let y = poly(&[0, b], 'y');
                    let sep = match y.strip_prefix('-') {
                        Some(positive) => format!(" - {positive}"),
                        None => format!(" + {y}"),
                    };
                    format!("{}{sep}", poly(&[0, a], 'x'))
                };
                (format!("Solve {} = {c1}, {} = {c2} for x.", side(*a1, *b1), side(*a2, *b2)), x.to_string())
            }
            Problem::Evaluate { coefficients, at, answer } => {
                (format!("Let f(t) = {}. What is f({at})?", poly(coefficients, 't')), answer.to_string())
            }
            Problem::Expand { a, b, c, d } => (
                format!("Expand ({})*({}).", poly(&[*b, *a], 'x'), poly(&[*d, *c], 'x')),
                poly(&[b * d, a * d + b * c, a * c], 'x'),
            ),
            Problem::Derivative { coefficients } => {
                let derived: Vec<i64> = coefficients.iter().enumerate().skip(1).map(|(p, c)| p as i64 * c).collect();
                (format!("Differentiate {} with respect to z.", poly(coefficients, 'z')), poly(&derived, 'z'))
            }
            Problem::Gcd { a, b, answer } => {
                (format!("Calculate the greatest common divisor of {a} and {b}."), answer.to_string())
            }
            Problem::Lcm { a, b, answer } => {
                (format!("What is the lowest common multiple of {a} and {b}?"), answer.to_string())
            }
            Problem::Remainder { a, b, answer } => {
                (format!("What is the remainder when {a} is divided by {b}?"), answer.to_string())
            }
            Problem::IsPrime { n, answer } => (format!("Is {n} a prime number?"), answer.to_string()),
            Problem::Factorise { n, factors } => {
                let mut distinct = factors.clone();
                distinct.dedup();
                let list: Vec<String> = distinct.iter().map(|f| f.to_string()).collect();
                (format!("List the prime factors of {n}."), list.join(", "))
            }
        }
    }
}

/// A document of `problems` question/answer pairs.
pub fn document(rng: &mut StdRng, problems: usize) -> String {
    let mut text = String::new();
    for _ in 0..problems {
        let (q, a) = Problem::draw(rng).render();
        text.push_str(&format!("Question: {q}\nAnswer: {a}\n\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_answer_is_right() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..5000 {
            match Problem::draw(&mut rng) {
                Problem::Arithmetic { a, op, b, answer } => assert_eq!(
                    answer,
                    match op {
                        '+' => a + b,
                        '-' => a - b,
                        '*' => a * b,
                        _ => {
                            assert_eq!(a % b, 0, "exact division");
                            a / b
                        }
                    }
                ),
                Problem::Linear { a, b, c, x, .. } => assert_eq!(a * x + b, c),
                Problem::LinearPair { a1, b1, c1, a2, b2, c2, x, y } => {
                    assert_eq!((a1 * x + b1 * y, a2 * x + b2 * y), (c1, c2));
                    assert_ne!(a1 * b2 - a2 * b1, 0, "a unique solution");
                }
                Problem::Evaluate { coefficients, at, answer } => {
                    let direct: i64 = coefficients.iter().enumerate().map(|(p, c)| c * at.pow(p as u32)).sum();
                    assert_eq!(direct, answer);
                }
                Problem::Gcd { a, b, answer } => {
                    assert!(a % answer == 0 && b % answer == 0);
                    assert!((answer + 1..=a.min(b)).all(|d| a % d != 0 || b % d != 0));
                }
                Problem::Lcm { a, b, answer } => {
                    assert!(answer % a == 0 && answer % b == 0);
                    assert!((1..answer).all(|m| m % a != 0 || m % b != 0));
                }
                Problem::Remainder { a, b, answer } => assert!(answer >= 0 && answer < b && (a - answer) % b == 0),
                Problem::IsPrime { n, answer } => assert_eq!(answer, (2..n).all(|d| n % d != 0) && n >= 2),
                Problem::Factorise { n, factors } => {
                    assert_eq!(factors.iter().product::<i64>(), n);
                    assert!(factors.iter().all(|&f| (2..f).all(|d| f % d != 0)));
                }
                Problem::Expand { .. } | Problem::Derivative { .. } => {}
            }
        }
    }

    #[test]
    fn rendering_reads_like_the_dataset() {
        let p = Problem::Linear { a: -3, b: 5, c: -10, var: 'k', x: 5 };
        assert_eq!(p.render(), ("Solve -3*k + 5 = -10 for k.".to_string(), "5".to_string()));
        let e = Problem::Expand { a: 2, b: -1, c: 1, d: 3 };
        assert_eq!(e.render().1, "2*x**2 + 5*x - 3");
        let d = Problem::Derivative { coefficients: vec![4, 0, -1, 2] };
        assert_eq!(
            d.render(),
            ("Differentiate 2*z**3 - z**2 + 4 with respect to z.".to_string(), "6*z**2 - 2*z".to_string())
        );
        let f = Problem::Factorise { n: 360, factors: vec![2, 2, 2, 3, 3, 5] };
        assert_eq!(f.render().1, "2, 3, 5");
    }
}
