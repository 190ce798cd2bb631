// swift-tools-version:6.0
import PackageDescription

// The layout follows the architecture: C shims at the bottom, the Redis and HTTP layers on
// them, the core on top, and one `switchyard` executable. Benchmarks and the test harness are
// kept apart from the libraries that ship.
let package = Package(
    name: "switchyard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "switchyard", targets: ["switchyard"]),
        .executable(name: "switchyard-bench", targets: ["SwitchyardBench"]),
        .library(name: "SwitchyardRedis", targets: ["SwitchyardRedis"]),
        .library(name: "SwitchyardHTTP", targets: ["SwitchyardHTTP"]),
        .library(name: "SwitchyardCore", targets: ["SwitchyardCore"]),
        .library(name: "SwitchyardQueue", targets: ["SwitchyardQueue"]),
        .library(name: "SwitchyardProviders", targets: ["SwitchyardProviders"]),
        .library(name: "SwitchyardResilience", targets: ["SwitchyardResilience"]),
        .library(name: "SwitchyardMetrics", targets: ["SwitchyardMetrics"]),
        .library(name: "SwitchyardCoordinator", targets: ["SwitchyardCoordinator"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.7.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        // Tests only: reads the compose file and Kubernetes manifests.
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
    ],
    targets: [
        // hiredis, found through pkg-config (Debian: libhiredis-dev, Homebrew: hiredis).
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"]), .brew(["hiredis"])]
        ),
        // The socket loop around hiredis: poll with a wake-up pipe so blocking reads can be cancelled.
        .target(name: "CHiredisShim", dependencies: ["CHiredis"]),
        // libcurl's setopt/getinfo are C variadics; this target wraps them in typed functions.
        .target(
            name: "CCurlShim",
            linkerSettings: [.linkedLibrary("curl")]
        ),
        .target(
            name: "SwitchyardRedis",
            dependencies: [
                "CHiredis", "CHiredisShim",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "SwitchyardHTTP",
            dependencies: ["CCurlShim", .product(name: "Logging", package: "swift-log")],
            linkerSettings: [.linkedLibrary("curl")]
        ),
        // posix_spawn's GNU extensions, for child processes that inherit no sockets.
        .target(name: "CProcessShim"),
        .target(
            name: "SwitchyardCore",
            dependencies: ["CProcessShim", "SwitchyardRedis", .product(name: "Logging", package: "swift-log")]
        ),
        // The job queue on Redis Streams: push, take, finish, retry, reclaim, dead letters.
        .target(
            name: "SwitchyardQueue",
            dependencies: ["SwitchyardCore", "SwitchyardRedis", .product(name: "Logging", package: "swift-log")]
        ),
        // Shared resilience: circuit breakers and rate limits per target, decided in Redis, with
        // each worker's local copy of the breakers kept by Pub/Sub.
        .target(
            name: "SwitchyardResilience",
            dependencies: [
                "SwitchyardCore", "SwitchyardRedis", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Provider adapters (OpenAI-compatible, Leonardo, Runware) and the executor that runs jobs
        // on them, along each model's chain of targets.
        .target(
            name: "SwitchyardProviders",
            dependencies: [
                "SwitchyardCore", "SwitchyardHTTP", "SwitchyardResilience", .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        // Local model servers: the catalog and each worker's LRU of model-server processes.
        .target(
            name: "SwitchyardModels",
            dependencies: [
                "CProcessShim", "SwitchyardCore", "SwitchyardHTTP", "SwitchyardProviders", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"), .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        // The cluster-wide response cache: canonical request keys, the cache policy.
        .target(
            name: "SwitchyardCache",
            dependencies: ["SwitchyardCore", "SwitchyardRedis", .product(name: "Logging", package: "swift-log")]
        ),
        // Metrics: one histogram layout everywhere (merges exactly), a swift-metrics backend
        // that keeps a process's cumulative numbers, and snapshots that workers publish to Redis.
        .target(
            name: "SwitchyardMetrics",
            dependencies: [.product(name: "CoreMetrics", package: "swift-metrics")]
        ),
        // The worker runtime: a Service that takes, runs and finishes jobs, and drains on SIGTERM.
        .target(
            name: "SwitchyardWorker",
            dependencies: [
                "SwitchyardCache", "SwitchyardCore", "SwitchyardMetrics", "SwitchyardQueue", "SwitchyardRedis",
                .product(name: "Logging", package: "swift-log"), .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The coordinator: a stateless HTTP service over Redis (Prometheus, JSON API, dashboard,
        // OpenAI-compatible front) that also reclaims lost jobs. The only target that needs
        // Hummingbird, so the rest builds without it.
        .target(
            name: "SwitchyardCoordinator",
            dependencies: [
                "SwitchyardCore", "SwitchyardMetrics", "SwitchyardQueue", "SwitchyardRedis", "SwitchyardResilience",
                "SwitchyardProviders", "SwitchyardModels",
                .product(name: "Hummingbird", package: "hummingbird"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "switchyard",
            dependencies: [
                "SwitchyardCache", "SwitchyardCore", "SwitchyardRedis", "SwitchyardHTTP", "SwitchyardQueue", "SwitchyardWorker",
                "SwitchyardProviders", "SwitchyardModels", "SwitchyardResilience", "SwitchyardMetrics", "SwitchyardCoordinator",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Starts private redis-server processes for tests and benchmarks. Not shipped.
        .target(name: "SwitchyardTestSupport", dependencies: ["SwitchyardCore", "SwitchyardRedis", "SwitchyardHTTP"]),
        .executableTarget(
            name: "SwitchyardBench",
            dependencies: [
                "SwitchyardCoordinator", "SwitchyardCore", "SwitchyardHTTP", "SwitchyardMetrics", "SwitchyardModels", "SwitchyardProviders",
                "SwitchyardQueue", "SwitchyardRedis", "SwitchyardResilience", "SwitchyardTestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"), .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            path: "Benchmarks/SwitchyardBench"
        ),
        .testTarget(name: "SwitchyardRedisTests", dependencies: ["SwitchyardRedis", "SwitchyardTestSupport"]),
        .testTarget(name: "SwitchyardHTTPTests", dependencies: ["SwitchyardHTTP", "SwitchyardTestSupport"]),
        .testTarget(
            name: "SwitchyardModelsTests",
            dependencies: [
                "CProcessShim", "SwitchyardCore", "SwitchyardMetrics", "SwitchyardModels", "SwitchyardTestSupport",
                .product(name: "Logging", package: "swift-log"), .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "SwitchyardProvidersTests",
            dependencies: ["SwitchyardCore", "SwitchyardHTTP", "SwitchyardMetrics", "SwitchyardProviders", "SwitchyardTestSupport"]
        ),
        .testTarget(name: "SwitchyardMetricsTests", dependencies: ["SwitchyardMetrics", .product(name: "CoreMetrics", package: "swift-metrics")]),
        .testTarget(
            name: "SwitchyardResilienceTests",
            dependencies: [
                "SwitchyardCore", "SwitchyardHTTP", "SwitchyardProviders", "SwitchyardRedis", "SwitchyardResilience", "SwitchyardTestSupport",
            ]
        ),
        .testTarget(
            name: "SwitchyardDeployTests",
            dependencies: [
                "SwitchyardCore", "SwitchyardHTTP", "SwitchyardQueue", "SwitchyardRedis", "SwitchyardTestSupport",
                .product(name: "Logging", package: "swift-log"), .product(name: "Yams", package: "Yams"),
            ]
        ),
        .testTarget(name: "SwitchyardCoreTests", dependencies: ["SwitchyardCore", "SwitchyardRedis", "SwitchyardTestSupport"]),
        .testTarget(name: "SwitchyardCacheTests", dependencies: ["SwitchyardCache", "SwitchyardCore", "SwitchyardRedis", "SwitchyardTestSupport"]),
        .testTarget(
            name: "SwitchyardCoordinatorTests",
            dependencies: [
                "SwitchyardCoordinator", "SwitchyardCore", "SwitchyardHTTP", "SwitchyardMetrics", "SwitchyardQueue", "SwitchyardRedis",
                "SwitchyardTestSupport", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // Scripts the tests run by path (the OpenAI client script), not resources.
            exclude: ["Scripts"]
        ),
        .testTarget(
            name: "SwitchyardQueueTests",
            dependencies: [
                "SwitchyardCore", "SwitchyardMetrics", "SwitchyardQueue", "SwitchyardRedis", "SwitchyardWorker", "SwitchyardTestSupport",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)
