import Foundation
import SwitchyardCore
import Testing

@Suite("Hand-written JSON matches Codable")
struct JSONTests {
    static let jobs: [Job] = [
        Job(kind: .chat, model: "qwen3-30b", input: JobInput(messages: [ChatMessage(role: "user", content: "hi \"there\"\n\u{1}")])),
        Job(
            id: "custom:id-1",
            kind: .image,
            model: "sdxl",
            route: "leonardo",
            input: JobInput(parameters: ["seed": .number(42), "style": .string("é漢🚀")], prompt: "a cat", size: "512x512", count: 2),
            priority: .high,
            maxAttempts: 7,
            timeout: 12.5,
            cache: .force,
            idempotencyKey: "k/1",
            batch: "b1",
            notBefore: 1_795_502_471.25,
            metadata: ["a": "b", "tab": "\t"],
            queuedAt: 1_795_502_471.2369685
        ),
        Job(kind: .embedding, model: "e5", input: JobInput(texts: ["one", "", "three"]), priority: .low, cache: .bypass),
    ]

    @Test(arguments: jobs)
    func jobRoundTripsBothWays(job: Job) throws {
        let fast = job.encodedJSON()
        #expect(try JSONDecoder().decode(Job.self, from: Data(fast)) == job)
        let codable = try JSONEncoder().encode(job)
        #expect(try Job(json: Array(codable)) == job)
        #expect(try Job(json: fast) == job)
    }

    @Test func resultRoundTripsBothWays() throws {
        let results = [
            JobResult(
                id: "j1",
                status: .succeeded,
                output: .object(["content": .string("ok"), "n": .array([.number(1.5), .bool(true), .null])]),
                attempts: 2,
                worker: "w",
                timings: .init(queued: 1.25, started: 2.5, finished: 3.75),
                usage: JobUsage(promptTokens: 3, completionTokens: 4, totalTokens: 7),
                batch: "b",
                metadata: ["k": "v"]
            ),
            JobResult(id: "j2", status: .dead, attempts: 3, error: .init(code: "timeout", message: "too slow")),
        ]
        for result in results {
            #expect(try JSONDecoder().decode(JobResult.self, from: Data(result.encodedJSON())) == result)
            #expect(try JobResult(json: Array(try JSONEncoder().encode(result))) == result)
        }
    }

    /// Every stored property set, so a field added to the type but not to the hand-written
    /// codec (the one source of the stored form) shows up as a difference below.
    static let fullJob: Job = {
        var job = jobs[1]
        job.input.messages = [ChatMessage(role: "user", content: "hi")]
        job.input.texts = ["a"]
        job.cacheNamespace = "tenant-a"
        job.cacheTTL = 90.5
        job.notify = true
        return job
    }()
    static let fullResult = JobResult(
        id: "j1",
        status: .failed,
        output: .object(["content": .string("ok")]),
        attempts: 2,
        worker: "w",
        timings: .init(queued: 1.25, started: 2.5, finished: 3.75),
        usage: JobUsage(promptTokens: 3, completionTokens: 4, totalTokens: 7, images: 1),
        error: .init(code: "c", message: "m", retryAfter: 2.5),
        batch: "b",
        metadata: ["k": "v"],
        testExecutor: "echo",
        cache: .init(status: .coalesced, lookupMs: 1.25),
        route: JobRoute(
            target: "b/m2",
            steps: [.init(target: "a/m1", outcome: .circuitOpen, code: "open", ms: 0.5), .init(target: "b/m2", outcome: .answered, ms: 12.5)],
            costUSD: 0.25
        )
    )

    /// Optional stored properties left nil, by name (nested ones as `outer.inner`).
    static func unset(_ value: Any, prefix: String = "") -> [String] {
        Mirror(reflecting: value).children.flatMap { child -> [String] in
            let name = prefix + (child.label ?? "?")
            let mirror = Mirror(reflecting: child.value)
            if mirror.displayStyle == .optional {
                guard let inner = mirror.children.first?.value else { return [name] }
                return Mirror(reflecting: inner).displayStyle == .struct ? unset(inner, prefix: name + ".") : []
            }
            return mirror.displayStyle == .struct && !(child.value is JSONValue) ? unset(child.value, prefix: name + ".") : []
        }
    }

    @Test func theHandWrittenCodecWritesEveryFieldCodableDoes() throws {
        #expect(Self.unset(Self.fullJob).isEmpty, "set these in the fixture: \(Self.unset(Self.fullJob))")
        #expect(Self.unset(Self.fullResult).isEmpty, "set these in the fixture: \(Self.unset(Self.fullResult))")
        #expect(try JSONValue.parse(Self.fullJob.encodedJSON()) == JSONValue.parse(Array(JSONEncoder().encode(Self.fullJob))))
        #expect(try JSONValue.parse(Self.fullResult.encodedJSON()) == JSONValue.parse(Array(JSONEncoder().encode(Self.fullResult))))
        #expect(try Job(json: Self.fullJob.encodedJSON()) == Self.fullJob)
        #expect(try JobResult(json: Self.fullResult.encodedJSON()) == Self.fullResult)
    }

    @Test func parserHandlesEscapesUnicodeAndNumbers() throws {
        let text = #"{"s":"a\"b\\c\/d\n\u00e9\ud83d\ude80","n":[-12,3.5,1e3,-0.25E-2,0],"t":true,"f":false,"z":null,"o":{}}"#
        let v = try JSONValue.parse(Array(text.utf8))
        #expect(v["s"] == .string("a\"b\\c/d\né🚀"))
        #expect(v["n"] == .array([.number(-12), .number(3.5), .number(1000), .number(-0.0025), .number(0)]))
        #expect(v["t"] == .bool(true) && v["f"] == .bool(false) && v["z"] == .null && v["o"] == .object([:]))
        // What it writes, it reads back.
        #expect(try JSONValue.parse(v.jsonBytes) == v)
    }

    @Test(arguments: [#"{"a":1"#, #"{"a" 1}"#, #"[1,]"#, #"{"a":tru}"#, "\"\u{1}\"", #"{"a":1} x"#, #""\ud800""#, ""])
    func parserRejectsBadJSON(text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(Array(text.utf8)) }
    }

    @Test func payloadErrorsNameTheField() {
        #expect {
            try Job(json: Array(#"{"v":1,"id":"x","kind":"chat","model":5}"#.utf8))
        } throws: { error in
            (error as? JobValidationError)?.field == "model" && "\(error)".contains("expected a string, got a number")
        }
        #expect {
            try Job(json: [0xff, 0x00])
        } throws: { error in
            (error as? JobValidationError)?.field == "(payload)"
        }
    }
}
