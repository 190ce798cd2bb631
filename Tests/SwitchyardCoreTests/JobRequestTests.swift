import SwitchyardCore
import Testing

@Suite("Job request lines")
struct JobRequestTests {
    func job(_ json: String) throws -> Job {
        try Job.fromRequest(try JSONValue.parse(Array(json.utf8)))
    }

    @Test(arguments: ["stream", "stream_options", "model", "messages"])
    func parametersTheWorkerSetsAreRefusedByName(key: String) throws {
        for kind in ["chat", "image", "embedding"] {
            let line = #"{"model":"m","kind":"\#(kind)","prompt":"p","input":"t","parameters":{"temperature":0,"\#(key)":true}}"#
            #expect {
                try job(line)
            } throws: { error in
                guard let error = error as? JobValidationError else { return false }
                return error.field == "parameters.\(key)" && error.problem.contains("set by the worker")
            }
        }
    }

    @Test func otherParametersStillPass() throws {
        let chat = try job(#"{"model":"m","prompt":"p","parameters":{"top_k":40,"n":2},"temperature":0}"#)
        #expect(chat.input.parameters == ["top_k": .number(40), "n": .number(2), "temperature": .number(0)])
        let image = try job(#"{"model":"m","kind":"image","prompt":"p","parameters":{"quality":"hd"}}"#)
        #expect(image.input.parameters == ["quality": .string("hd")])
    }

    @Test func cacheSettingsAreCheckedByName() throws {
        let job = try job(#"{"model":"m","prompt":"p","cache":"refresh","cache_namespace":"tenant-a","cache_ttl":600}"#)
        #expect(job.cache == .refresh && job.cacheNamespace == "tenant-a" && job.cacheTTL == 600)
        for (line, field) in [
            (#"{"model":"m","prompt":"p","cache_namespace":"a/b"}"#, "cache_namespace"),
            (#"{"model":"m","prompt":"p","cache_ttl":0}"#, "cache_ttl"),
            (#"{"model":"m","prompt":"p","cache":"sometimes"}"#, "cache"),
        ] {
            #expect {
                try self.job(line)
            } throws: { error in
                (error as? JobValidationError)?.field == field
            }
        }
    }
}
