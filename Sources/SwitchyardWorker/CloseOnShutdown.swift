import ServiceLifecycle

/// A service that only closes something when its group shuts down (gracefully or by
/// cancellation). Put it before the services that use the resource: a group stops its services
/// in reverse order, so the resource closes after they have stopped.
public struct CloseOnShutdown: Service {
    let action: @Sendable () async -> Void

    public init(_ action: @escaping @Sendable () async -> Void) {
        self.action = action
    }

    public func run() async throws {
        try? await gracefulShutdown()
        await action()
    }
}
