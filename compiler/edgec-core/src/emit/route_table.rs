//! The route table a bundle carries for the device runtime's router.

use edge_route::RouteTableEntry;

use crate::check::model::Deployment;

/// The deployment's routes, in the order written. A route without a priority gets the hub's
/// default, 0; without a time-to-live, 0, which the runtime reads as the hub's default.
pub fn route_table(deployment: &Deployment) -> Vec<RouteTableEntry> {
    deployment
        .routes
        .iter()
        .map(|route| RouteTableEntry {
            name: route.name.clone(),
            route: route.text.clone(),
            priority: route.priority.map_or(0, |priority| {
                priority.min(u64::from(edge_route::LOWEST_PRIORITY)) as u8
            }),
            time_to_live_secs: route
                .time_to_live_seconds
                .map_or(0, |seconds| u32::try_from(seconds).unwrap_or(u32::MAX)),
        })
        .collect()
}
