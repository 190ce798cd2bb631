import Hummingbird

extension Coordinator {
    func addOpenAIRoutes(to router: Router<BasicRequestContext>) {}
}
