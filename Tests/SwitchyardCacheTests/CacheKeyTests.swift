import Foundation
import SwitchyardCache
import SwitchyardCore
import Testing

@Suite("Response cache: keys and policy")
struct CacheKeyTests {
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        ),
    ])
    func sha256MatchesTheStandardVectors(input: String, digest: String) {
        #expect(SHA256.hex(Array(input.utf8)) == digest)
    }

    @Test func sha256OfAMillionAs() {
        #expect(
            SHA256.hex([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        )
    }

    static func chat(_ parameters: [String: JSONValue], content: String = "hi", model: String = "m") -> Job {
        Job(kind: .chat, model: model, input: JobInput(messages: [ChatMessage(role: "user", content: content)], parameters: parameters))
    }

    static let target = CacheTarget.provider("openrouter", model: "qwen/qwen3")

    static func key(_ job: Job, _ target: CacheTarget = target) -> String { CacheKey(job: job, target: target).digest }

    @Test func fieldOrderNumberFormsAndDefaultsGiveOneKey() throws {
        let a = try JSONValue.parse(Array(#"{"temperature":0,"max_tokens":16}"#.utf8)).object!
        let b = try JSONValue.parse(Array(#"{"max_tokens":16.0,"temperature":0.0}"#.utf8)).object!
        #expect(Self.key(Self.chat(a)) == Self.key(Self.chat(b)))
        // Explicit shared defaults, and settings that cannot change the answer, are left out.
        var c = b
        c["n"] = .number(1)
        c["presence_penalty"] = .number(0)
        c["user"] = .string("someone")
        c["stream"] = .bool(true)
        #expect(Self.key(Self.chat(c)) == Self.key(Self.chat(a)))
        // At temperature 0 decoding is greedy: sampling settings do not matter.
        c["top_p"] = .number(0.5)
        c["seed"] = .number(7)
        #expect(Self.key(Self.chat(c)) == Self.key(Self.chat(a)))
    }

    @Test func anythingThatChangesTheAnswerChangesTheKey() {
        let base = Self.chat(["temperature": .number(0), "max_tokens": .number(16)])
        let keys = [
            Self.key(base),
            Self.key(Self.chat(["temperature": .number(0), "max_tokens": .number(17)])),
            Self.key(Self.chat(["temperature": .number(0.5), "max_tokens": .number(16)])),
            Self.key(Self.chat(["temperature": .number(0), "max_tokens": .number(16)], content: "hi!")),
            Self.key(base, .provider("openrouter", model: "qwen/qwen3-other")),
            Self.key(base, .provider("other", model: "qwen/qwen3")),
            Self.key(base, .local("m", file: "/models/a.gguf 123 456")),
            Self.key(base, .local("m", file: "/models/a.gguf 124 456")),
            Self.key(Self.chat(["temperature": .number(1), "top_p": .number(0.5)])),
            Self.key(Self.chat(["temperature": .number(1), "top_p": .number(0.6)])),
        ]
        #expect(Set(keys).count == keys.count)
        // Embedding and image inputs count too.
        let one = Job(kind: .embedding, model: "e", input: JobInput(texts: ["a"]))
        let two = Job(kind: .embedding, model: "e", input: JobInput(texts: ["a", "b"]))
        #expect(Self.key(one) != Self.key(two))
    }

    @Test func theCanonicalFormIsWhatTheDocsSay() {
        let job = Self.chat(["max_tokens": .number(16.0), "temperature": .number(0), "user": .string("u")])
        let key = CacheKey(job: job, target: Self.target)
        let text = String(decoding: key.canonical, as: UTF8.self)
        #expect(
            text
                == #"{"form":1,"input":[{"content":"hi","role":"user"}],"kind":"chat","parameters":{"max_tokens":16,"temperature":0},"target":"provider:openrouter/qwen/qwen3"}"#
        )
        #expect(key.redisKey(queue: "default", namespace: nil) == "syc:default:{\(key.digest)}")
        #expect(key.redisKey(queue: "default", namespace: "tenant-a") == "syc:default:{\(key.digest)}:ns:tenant-a")
        // No namespace is not a namespace called "-", and a queue name cannot pose as a namespace.
        #expect(key.redisKey(queue: "default", namespace: "-") != key.redisKey(queue: "default", namespace: nil))
        #expect(key.redisKey(queue: "a:ns:b", namespace: nil) != key.redisKey(queue: "a", namespace: "b"))
        #expect(!CacheKey.isValidNamespace("a:b") && !CacheKey.isValidNamespace("") && CacheKey.isValidNamespace("tenant-a"))
    }

    @Test func policyFollowsTheJobsCacheFieldAndDeterminism() {
        var job = Self.chat(["temperature": .number(0)])
        #expect(CacheUse(job: job) == .readWrite)
        job.input.parameters = ["temperature": .number(0.7)]
        #expect(CacheUse(job: job) == .none)
        job.input.parameters = ["temperature": .number(0.7), "seed": .number(42)]
        #expect(CacheUse(job: job) == .readWrite)
        job.input.parameters = [:]  // temperature's default is not 0
        #expect(CacheUse(job: job) == .none)
        job.cache = .force
        #expect(CacheUse(job: job) == .readWrite)
        job.cache = .refresh
        #expect(CacheUse(job: job) == .writeOnly)
        job.input.parameters = ["temperature": .number(0)]
        job.cache = .bypass
        #expect(CacheUse(job: job) == .none)
        #expect(CacheUse(job: Job(kind: .embedding, model: "e", input: JobInput(texts: ["a"]))) == .readWrite)
    }
}
