import Foundation
import SwitchyardHTTP
import Testing

@Suite("Retry policy")
struct RetryPolicyTests {
    let post = HTTPRequest(method: "POST", url: "https://api.example/v1/chat/completions", body: [])
    let get = HTTPRequest(url: "https://api.example/v1/models")
    let policy = RetryPolicy(maxAttempts: 4, base: .milliseconds(100), cap: .seconds(1), maxRetryAfter: .seconds(30))

    func head(_ status: Int, _ headers: [(String, String)] = []) -> HTTPResponseHead {
        HTTPResponseHead(status: status, headers: headers.map { (name: $0.0, value: $0.1) })
    }

    @Test(arguments: [408, 409, 429, 500, 502, 503, 504, 599])
    func retriesTransientStatuses(status: Int) {
        #expect(policy.decide(attempt: 1, request: post, response: head(status), error: nil, random: 1) == .retry(after: .milliseconds(100)))
    }

    @Test(arguments: [200, 400, 401, 403, 404, 422, 501])
    func doesNotRetryOtherStatuses(status: Int) {
        #expect(policy.decide(attempt: 1, request: post, response: head(status), error: nil) == .done)
    }

    @Test func fullJitterStaysUnderTheCappedExponential() {
        #expect(policy.backoffDelay(attempt: 1, random: 0) == .zero)
        #expect(policy.backoffDelay(attempt: 3, random: 1) == .milliseconds(400))
        #expect(policy.backoffDelay(attempt: 20, random: 1) == .seconds(1))
        #expect(policy.backoffDelay(attempt: 3, random: 0.5) == .milliseconds(200))
    }

    @Test func honoursRetryAfterInSecondsMillisecondsAndDates() {
        #expect(policy.decide(attempt: 1, request: post, response: head(429, [("Retry-After", "3")]), error: nil) == .retry(after: .seconds(3)))
        #expect(
            policy.decide(attempt: 1, request: post, response: head(429, [("retry-after-ms", "250")]), error: nil)
                == .retry(after: .milliseconds(250))
        )
        let now = Date(timeIntervalSince1970: 1_700_000_000)
        let date = head(503, [("Retry-After", "Tue, 14 Nov 2023 22:13:40 GMT")])  // now + 20 s
        #expect(policy.decide(attempt: 1, request: post, response: date, error: nil, now: now) == .retry(after: .seconds(20)))
    }

    @Test func givesUpWhenAskedToWaitTooLongAndSaysSo() {
        let decision = policy.decide(attempt: 1, request: post, response: head(429, [("Retry-After", "120")]), error: nil)
        guard case .giveUp(let reason) = decision else {
            Issue.record("expected give up, got \(decision)")
            return
        }
        #expect(reason.contains("120") && reason.contains("30"))
    }

    @Test func stopsAtTheAttemptLimit() {
        guard case .giveUp = policy.decide(attempt: 4, request: post, response: head(500), error: nil) else {
            Issue.record("expected give up")
            return
        }
    }

    @Test func transportFailuresAfterSendingAreRetriedOnlyWhenIdempotent() {
        let refused = HTTPClientError(.connectFailed, "refused", mayHaveReachedServer: false)
        let timedOut = HTTPClientError(.timeout, "timed out", mayHaveReachedServer: true)
        let reset = HTTPClientError(.connectionLost, "reset", mayHaveReachedServer: true)
        let tls = HTTPClientError(.tls, "bad certificate", mayHaveReachedServer: false)
        #expect(policy.decide(attempt: 1, request: post, response: nil, error: refused, random: 1) == .retry(after: .milliseconds(100)))
        #expect(policy.decide(attempt: 1, request: post, response: nil, error: timedOut) == .done)
        #expect(policy.decide(attempt: 1, request: post, response: nil, error: reset) == .done)
        #expect(policy.decide(attempt: 1, request: get, response: nil, error: timedOut, random: 1) == .retry(after: .milliseconds(100)))
        #expect(policy.decide(attempt: 1, request: get, response: nil, error: tls) == .done)
    }
}
