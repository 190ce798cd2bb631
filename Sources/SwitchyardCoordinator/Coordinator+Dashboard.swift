import Hummingbird

extension Coordinator {
    func addDashboardRoutes(to router: Router<BasicRequestContext>) {}
}
