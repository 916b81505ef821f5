//! Startup order: numbers as written, and `after = [...]` dependencies sorted into numbers.
//!
//! A module with `after` starts one step after the latest of its dependencies; a module without
//! any startup specification that others depend on counts as step 0. Modules nobody orders keep no
//! number, so IoT Edge starts them whenever it likes, as it would without edgec.

use std::collections::{BTreeMap, BTreeSet};

use super::context::Checker;
use super::model::{Module, StartupSpecification};
use crate::diagnostic::{Diagnostic, DiagnosticKind, LabelRole};
use crate::span::Location;

pub fn startup_orders(
    checker: &mut Checker<'_>,
    deployment: &str,
    modules: &[&Module],
    deployment_modules: &[String],
) -> BTreeMap<String, u64> {
    let deployed: BTreeSet<&str> = deployment_modules.iter().map(String::as_str).collect();
    let mut dependencies: BTreeMap<&str, Vec<&(String, Location)>> = BTreeMap::new();
    for module in modules {
        if let StartupSpecification::After(after) = &module.startup {
            for dependency in after {
                if deployed.contains(dependency.0.as_str()) {
                    dependencies
                        .entry(&module.name)
                        .or_default()
                        .push(dependency);
                } else {
                    checker.report(
                        DiagnosticKind::DependencyNotDeployed {
                            module: module.name.clone(),
                            dependency: dependency.0.clone(),
                            deployment: deployment.to_owned(),
                        },
                        dependency.1.file,
                        dependency.1.span,
                    );
                }
            }
        }
    }
    let mut orders = BTreeMap::new();
    for module in modules {
        if let StartupSpecification::Order(order) = module.startup {
            orders.insert(module.name.clone(), order);
        }
    }
    // Depth-first search with an explicit path, so a cycle can be reported with every step.
    let mut finished: BTreeMap<&str, u64> = BTreeMap::new();
    let mut reported_cycles: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in dependencies.keys().copied() {
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        while let Some(&(current, next_index)) = path.last() {
            let edges = dependencies.get(current).map_or(&[][..], Vec::as_slice);
            if finished.contains_key(current) {
                path.pop();
                continue;
            }
            if let Some(&edge) = edges.get(next_index) {
                if let Some(last) = path.last_mut() {
                    last.1 += 1;
                }
                let target = edge.0.as_str();
                if let Some(position) = path.iter().position(|(name, _)| *name == target) {
                    report_cycle(
                        checker,
                        &path[position..],
                        &dependencies,
                        &mut reported_cycles,
                    );
                    continue;
                }
                if !finished.contains_key(target) {
                    path.push((target, 0));
                }
                continue;
            }
            let order = edges
                .iter()
                .map(|edge| {
                    finished
                        .get(edge.0.as_str())
                        .copied()
                        .or_else(|| orders.get(&edge.0).copied())
                        .unwrap_or(0)
                })
                .max()
                .map_or(0, |latest| latest + 1);
            let order = orders.get(current).copied().unwrap_or(order);
            finished.insert(current, order);
            path.pop();
        }
    }
    for (name, order) in &finished {
        orders.entry((*name).to_owned()).or_insert(*order);
    }
    for edges in dependencies.values() {
        for edge in edges {
            orders.entry(edge.0.clone()).or_insert(0);
        }
    }
    orders
}

fn report_cycle(
    checker: &mut Checker<'_>,
    cycle: &[(&str, usize)],
    dependencies: &BTreeMap<&str, Vec<&(String, Location)>>,
    reported: &mut BTreeSet<Vec<String>>,
) {
    let mut names: Vec<String> = cycle.iter().map(|(name, _)| (*name).to_owned()).collect();
    let mut canonical = names.clone();
    canonical.sort();
    if !reported.insert(canonical) {
        return;
    }
    names.push(names[0].clone());
    let step_location = |from: &str, to: &str| {
        dependencies
            .get(from)
            .and_then(|edges| edges.iter().find(|edge| edge.0 == to))
            .map(|edge| edge.1)
    };
    let closing_from = &names[names.len() - 2];
    let Some(primary) = step_location(closing_from, &names[0]) else {
        return;
    };
    let mut diagnostic = Diagnostic::new(
        DiagnosticKind::StartupCycle {
            cycle: names.clone(),
        },
        primary,
    );
    for window in names.windows(2).take(names.len() - 2) {
        if let Some(location) = step_location(&window[0], &window[1]) {
            diagnostic = diagnostic.with_label(
                location,
                LabelRole::CycleStep {
                    from: window[0].clone(),
                    to: window[1].clone(),
                },
            );
        }
    }
    checker.diagnostics.push(diagnostic);
}
